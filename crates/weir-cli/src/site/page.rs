//! The pages of a pipeline site: the index with every pipeline and their dependencies, and one page per pipeline
//! with what it reads and writes, its steps as written, its schedule and its state.

use std::collections::BTreeMap;
use std::fmt::Write;

use weir_spec::{Category, Pipeline, Step};

use super::graph::{self, Node};

/// A pipeline as the site shows it.
pub struct Doc {
    pub pipeline: Pipeline,
    /// The file as written, for each step's definition.
    pub text: String,
    /// The file, as the site names it (relative to the directory documented).
    pub file: String,
    /// The last runs and the stored state, with `--state`.
    pub history: Option<History>,
}

pub struct History {
    pub runs: Vec<weir_engine::RunRecord>,
    pub state: BTreeMap<String, weir_spec::TypedValue>,
}

pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `text` cut to `max` characters, with `…`.
pub fn cut(text: &str, max: usize) -> String {
    weir_engine::truncate(text, max)
}

/// The file name of a pipeline's page.
pub fn href(name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}.html")
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330}header{background:#1d2330;color:#fff;padding:10px 24px}header a{color:#cfd6e4}main{padding:8px 24px 40px;max-width:1200px}table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d5dae3;padding:4px 8px;text-align:left;vertical-align:top}pre{background:#f4f6f9;padding:8px;overflow:auto}.muted{color:#6b7385}.graph text{font-size:12px}.graph .note{fill:#6b7385;font-size:11px}.node rect{fill:#eceff3;stroke:#5b6478}.node.source rect{fill:#dbe9f8}.node.destination rect{fill:#d9f2df}.node.pipeline rect{fill:#f3ecd9}.graph-box{overflow:auto;border:1px solid #d5dae3}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Weir pipelines</title><style>{STYLE}</style></head><body><header><a href=\"index.html\">Weir pipelines</a> · {}</header><main>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    )
}

/// Where an extract step reads or a load writes, and through what: never a connection's URL or options, which may
/// hold secrets, only its name and kind.
fn endpoint(pipeline: &Pipeline, step: &Step) -> Option<(String, String)> {
    let at = step.kind.endpoint()?;
    let through = match at.connection {
        Some(name) => {
            let kind = pipeline.connections.get(name).map_or("?", |c| c.kind.value.as_str());
            format!("{kind} · connection {name}")
        }
        None => at.form.to_string(),
    };
    Some((at.location.to_string(), through))
}

/// The lines of `text` that define step `step` (its key line and everything indented under it).
fn definition(text: &str, step: &Step) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(first) = usize::try_from(step.id.referenced.line()).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    let Some(key) = lines.get(first) else { return String::new() };
    let indent = key.len() - key.trim_start().len();
    let end = (first + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && lines[i].len() - lines[i].trim_start().len() <= indent)
        .unwrap_or(lines.len());
    let block: Vec<&str> = lines[first..end].iter().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect();
    block.join("\n").trim_end().to_string()
}

/// A trigger in words, with the next fire times of a schedule.
fn trigger_words(trigger: &weir_spec::Trigger, now: chrono::DateTime<chrono::Utc>) -> String {
    if let Some(cron) = &trigger.cron {
        let zone = trigger.timezone.as_ref().map_or("UTC", |t| t.value.as_str());
        let mut out = format!("on the cron schedule <code>{}</code> ({})", esc(&cron.value), esc(zone));
        if let Ok(schedule) =
            weir_spec::CronSchedule::parse(&cron.value, trigger.timezone.as_ref().map(|t| t.value.as_str()))
        {
            let _ = write!(out, ": <span class=\"cron-words\">{}</span>", esc(&schedule.cron.describe()));
            let mut at = now;
            let mut next = Vec::new();
            for _ in 0..3 {
                let Some(t) = schedule.next_after(at) else { break };
                next.push(t.format("%Y-%m-%d %H:%M UTC").to_string());
                at = t;
            }
            let _ = write!(out, "; next: <span class=\"next-fires\">{}</span>", next.join(", "));
        }
        return out;
    }
    if let Some(every) = &trigger.every {
        return format!("every {}", humanize(every.0));
    }
    if !trigger.after.is_empty() {
        let names: Vec<String> = trigger
            .after
            .iter()
            .map(|a| format!("<a href=\"{}\">{}</a>", esc(&href(&a.value)), esc(&a.value)))
            .collect();
        return format!("after {} succeeded", names.join(" and "));
    }
    if let Some(hook) = &trigger.webhook {
        return format!("on a webhook: <code>POST /hooks/{}</code>", esc(&hook.name.value));
    }
    "manually".to_string()
}

/// A YAML value as written: text without JSON's quotes.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{} day(s)", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hour(s)", s / 3_600),
        s if s % 60 == 0 => format!("{} minute(s)", s / 60),
        s => format!("{s} seconds"),
    }
}

/// One pipeline's page. `downstream` names the pipelines that run after it.
pub fn pipeline_page(doc: &Doc, downstream: &[String], now: chrono::DateTime<chrono::Utc>) -> String {
    let p = &doc.pipeline;
    let mut b = format!("<h1 id=\"name\">{}</h1>", esc(p.name()));
    if let Some(description) = &p.description {
        let _ = write!(b, "<p id=\"description\">{}</p>", esc(description));
    }
    b.push_str("<table id=\"about\">");
    let _ = write!(b, "<tr><th>File</th><td>{}</td></tr>", esc(&doc.file));
    if let Some(owner) = &p.owner {
        let _ = write!(b, "<tr><th>Owner</th><td>{}</td></tr>", esc(owner));
    }
    if !p.contacts.is_empty() {
        let _ = write!(b, "<tr><th>Contacts</th><td>{}</td></tr>", esc(&p.contacts.join(", ")));
    }
    if let Some(link) = &p.docs {
        let _ = write!(b, "<tr><th>Documentation</th><td><a href=\"{0}\">{0}</a></td></tr>", esc(link));
    }
    let schedule: Vec<String> = p.triggers.iter().map(|t| trigger_words(t, now)).collect();
    let schedule = if schedule.is_empty() { "manually (no triggers)".to_string() } else { schedule.join("<br>") };
    let _ = write!(b, "<tr><th>Runs</th><td id=\"schedule\">{schedule}</td></tr>");
    if !downstream.is_empty() {
        let names: Vec<String> =
            downstream.iter().map(|n| format!("<a href=\"{}\">{}</a>", esc(&href(n)), esc(n))).collect();
        let _ = write!(b, "<tr><th>Then starts</th><td>{}</td></tr>", names.join(", "));
    }
    b.push_str("</table>");

    b.push_str("<h2>Lineage</h2><p class=\"muted\">Sources, through every step, to destinations.</p>");
    let (nodes, edges) = lineage(p);
    let _ = write!(b, "<div class=\"graph-box\">{}</div>", graph::svg("lineage", &nodes, &edges));

    let traced: Vec<(&str, super::columns::ColumnLineage)> =
        p.steps.iter().filter_map(|s| super::columns::of(&s.kind).map(|c| (s.id(), c))).collect();
    if !traced.is_empty() {
        b.push_str("<h3>Columns</h3><p class=\"muted\">Where each column a <code>map</code> makes or a <code>sql</code> step selects comes from, as its expression says.</p><table id=\"columns\"><tr><th>Step</th><th>Column</th><th>From</th></tr>");
        for (step, columns) in traced {
            for (column, from) in columns {
                let from = if from.is_empty() { "(computed)".to_string() } else { from.join(", ") };
                let _ = write!(b, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(step), esc(&column), esc(&from));
            }
        }
        b.push_str("</table>");
    }

    b.push_str("<h2>Sources and destinations</h2><table id=\"endpoints\"><tr><th>Step</th><th></th><th>What</th><th>Through</th></tr>");
    for step in p.steps.iter() {
        if let Some((what, through)) = endpoint(p, step) {
            let direction = if step.kind.category() == Category::Load { "writes" } else { "reads" };
            let _ = write!(
                b,
                "<tr><td><a href=\"#step-{0}\">{0}</a></td><td>{direction}</td><td>{1}</td><td>{2}</td></tr>",
                esc(step.id()),
                esc(&what),
                esc(&through)
            );
        }
    }
    b.push_str("</table>");

    b.push_str("<h2>Steps</h2>");
    for step in p.steps.iter() {
        let _ = write!(
            b,
            "<h3 id=\"step-{0}\">{0} <span class=\"muted\">{1}</span></h3>",
            esc(step.id()),
            step.kind.name()
        );
        if let Some(description) = &step.description {
            let _ = write!(b, "<p>{}</p>", esc(description));
        }
        let _ = write!(b, "<pre>{}</pre>", esc(&definition(&doc.text, step)));
    }

    if !p.checks.is_empty() {
        b.push_str(
            "<h2>Checks</h2><table id=\"checks\"><tr><th>Check</th><th>Step</th><th>Severity</th><th>Rules</th></tr>",
        );
        for (name, check) in &p.checks {
            let mut rules = Vec::new();
            rules.extend(check.min_rows.map(|n| format!("at least {n} rows")));
            rules.extend(check.max_rows.map(|n| format!("at most {n} rows")));
            if !check.unique.is_empty() {
                rules.push(format!("unique {}", check.unique.join(", ")));
            }
            if !check.not_null.is_empty() {
                rules.push(format!("no NULL in {}", check.not_null.join(", ")));
            }
            rules.extend(check.condition.as_ref().map(|c| format!("every row: {c}")));
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                esc(name),
                esc(&check.step.value),
                check.severity,
                esc(&rules.join("; "))
            );
        }
        b.push_str("</table>");
    }

    if !p.state.is_empty() || !p.variables.is_empty() {
        b.push_str("<h2>Variables and state</h2><table id=\"values\"><tr><th>Name</th><th></th><th>Type</th><th>Default</th><th>Stored</th><th>About</th></tr>");
        let stored = doc.history.as_ref().map(|h| &h.state);
        for (name, var) in &p.variables {
            let default = var.value.default.as_ref().map(|d| plain(&d.value)).unwrap_or_default();
            let about = var.value.description.clone().unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td>{}</td><td>variable</td><td>{:?}</td><td>{}</td><td></td><td>{}</td></tr>",
                esc(name),
                var.value.ty,
                esc(&default),
                esc(&about)
            );
        }
        for (name, decl) in &p.state {
            let value = stored.and_then(|s| s.get(name)).map(|v| v.to_string()).unwrap_or_default();
            let update = match &decl.value.update {
                Some(weir_spec::StateUpdate::Max(column)) => format!("the largest {} loaded", column.value),
                Some(weir_spec::StateUpdate::RunStartedAt) => "when the last successful run started".to_string(),
                None => String::new(),
            };
            let about = [decl.value.description.clone().unwrap_or_default(), update].join(" ");
            let _ = write!(
                b,
                "<tr><td>{}</td><td>state</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                decl.value.ty,
                esc(&plain(&decl.value.default.value)),
                esc(&value),
                esc(about.trim())
            );
        }
        b.push_str("</table>");
    }

    if let Some(history) = &doc.history {
        b.push_str("<h2>Last runs</h2><table id=\"runs\"><tr><th>Run</th><th>Trigger</th><th>Status</th><th>Started</th><th>Ended</th><th>Error</th></tr>");
        for run in &history.runs {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&run.run_id),
                esc(&run.trigger),
                esc(&run.status),
                esc(&run.started_at),
                esc(run.ended_at.as_deref().unwrap_or("")),
                esc(&cut(run.error.as_deref().unwrap_or(""), 200))
            );
        }
        b.push_str("</table>");
    }
    page(p.name(), &b)
}

/// The nodes and edges of a pipeline's lineage: a source box before each extract step, a destination box after
/// each load, and the steps between.
fn lineage(p: &Pipeline) -> (Vec<Node>, Vec<(String, String)>) {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let dag = weir_engine::step_graph(p).ok();
    for step in p.steps.iter() {
        let category = step.kind.category();
        if category == Category::Extract
            && let Some((what, through)) = endpoint(p, step)
        {
            let id = format!("source:{}", step.id());
            nodes.push(Node { id: id.clone(), label: what, note: through, class: "source", href: None });
            edges.push((id, step.id().to_string()));
        }
        nodes.push(Node {
            id: step.id().to_string(),
            label: step.id().to_string(),
            note: step.kind.name().to_string(),
            class: "step",
            href: Some(format!("#step-{}", step.id())),
        });
        let mut reads: Vec<String> = match &dag {
            Some(dag) => dag.inputs.get(step.id()).cloned().unwrap_or_default(),
            None => step.kind.input().map(|i| vec![i.value.clone()]).unwrap_or_default(),
        };
        reads.sort();
        reads.dedup();
        edges.extend(reads.into_iter().map(|from| (from, step.id().to_string())));
        if category == Category::Load
            && let Some((what, through)) = endpoint(p, step)
        {
            let id = format!("destination:{}", step.id());
            nodes.push(Node { id: id.clone(), label: what, note: through, class: "destination", href: None });
            edges.push((step.id().to_string(), id));
        }
    }
    (nodes, edges)
}

/// The index: every pipeline, what it is for and when it runs, and the graph of `after:` dependencies.
pub fn index_page(docs: &[Doc], broken: &[String], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut b = String::from("<h1>Pipelines</h1>");
    let nodes: Vec<Node> = docs
        .iter()
        .map(|d| Node {
            id: d.pipeline.name().to_string(),
            label: d.pipeline.name().to_string(),
            note: d.pipeline.owner.clone().unwrap_or_default(),
            class: "pipeline",
            href: Some(href(d.pipeline.name())),
        })
        .collect();
    let edges: Vec<(String, String)> = docs
        .iter()
        .flat_map(|d| {
            d.pipeline
                .triggers
                .iter()
                .flat_map(|t| t.after.iter())
                .map(|a| (a.value.clone(), d.pipeline.name().to_string()))
        })
        .collect();
    b.push_str("<h2>Dependencies</h2><p class=\"muted\">An arrow runs from a pipeline to those that start after it succeeds (<code>after:</code>).</p>");
    let _ = write!(b, "<div class=\"graph-box\">{}</div>", graph::svg("dependencies", &nodes, &edges));
    b.push_str("<table id=\"pipelines\"><tr><th>Pipeline</th><th>What it does</th><th>Owner</th><th>Runs</th></tr>");
    for d in docs {
        let p = &d.pipeline;
        let runs: Vec<String> = p.triggers.iter().map(|t| trigger_words(t, now)).collect();
        let _ = write!(
            b,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&href(p.name())),
            esc(p.name()),
            esc(p.description.as_deref().unwrap_or("")),
            esc(p.owner.as_deref().unwrap_or("")),
            if runs.is_empty() { "manually".to_string() } else { runs.join("<br>") }
        );
    }
    b.push_str("</table>");
    if !broken.is_empty() {
        b.push_str("<h2>Files with mistakes</h2><pre id=\"broken\">");
        b.push_str(&esc(&broken.join("\n")));
        b.push_str("</pre>");
    }
    page("index", &b)
}
