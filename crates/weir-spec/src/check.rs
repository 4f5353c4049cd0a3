//! Checks that need no engine: references between steps, the DAG, typed defaults, templates, environment.
//! SQL parsing and column checks happen when the engine plans (`weir validate` runs both).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Pos};
use crate::model::{Pipeline, StateUpdate};
use crate::step::{Category, DbWriteMode, Rule, StepKind};
use crate::template::{SCOPES, Template, env_references};
use crate::value::TypedValue;

static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("static regex"));
static PIPELINE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("static regex"));

/// The process environment as the checks see it, so tests need not set real variables.
#[derive(Debug, Clone, Default)]
pub struct Environment(HashMap<String, String>);

impl Environment {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_string(), value.to_string());
        self
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Every mistake the spec alone can show, in file order.
pub fn check(pipeline: &Pipeline, env: &Environment) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !PIPELINE_NAME.is_match(pipeline.name()) {
        out.push(
            Diagnostic::at(&pipeline.name, format!("pipeline name `{}` cannot name files and runs", pipeline.name()))
                .with_hint("use letters, digits, `_`, `-` and `.`"),
        );
    }
    check_values(pipeline, &mut out);
    check_connections(pipeline, env, &mut out);
    check_steps(pipeline, &mut out);
    out.sort_by_key(|d| (d.pos.line, d.pos.column));
    out
}

fn check_values(pipeline: &Pipeline, out: &mut Vec<Diagnostic>) {
    for (name, var) in &pipeline.variables {
        if !IDENT.is_match(name) {
            out.push(Diagnostic::at(var, format!("variable name `{name}` is not an identifier SQL can bind as ${name}")));
        }
        if let Some(default) = &var.value.default
            && let Err(e) = TypedValue::from_json(var.value.ty, &default.value)
        {
            out.push(Diagnostic::at(default, format!("default of variable `{name}`: {e}")));
        }
        if pipeline.state.contains_key(name) {
            out.push(
                Diagnostic::at(var, format!("`{name}` is both a variable and a state value"))
                    .with_hint("SQL binds both as `$name`; rename one"),
            );
        }
    }
    for (name, decl) in &pipeline.state {
        if !IDENT.is_match(name) {
            out.push(Diagnostic::at(decl, format!("state name `{name}` is not an identifier SQL can bind as ${name}")));
        }
        if let Err(e) = TypedValue::from_json(decl.value.ty, &decl.value.default.value) {
            out.push(Diagnostic::at(&decl.value.default, format!("default of state `{name}`: {e}")));
        }
        if let Some(StateUpdate::Max(target)) = &decl.value.update {
            match target.value.split_once('.') {
                Some((step, _)) if pipeline.step(step).is_some() => {}
                Some((step, _)) => out.push(Diagnostic::at(target, format!("state `{name}` takes its max from unknown step `{step}`"))),
                None => out.push(
                    Diagnostic::at(target, format!("state `{name}`: `{}` is not `step.column`", target.value))
                        .with_hint("e.g. `update: { max: orders.updated_at }`"),
                ),
            }
        }
    }
}

/// Connection kinds this build understands, and what they are.
pub const CONNECTION_KINDS: &[(&str, &str)] = &[
    ("postgres", "PostgreSQL: `url: postgres://user:${PGPASSWORD}@host:5432/db`"),
    ("mysql", "MySQL or MariaDB: `url: mysql://user:${MYSQL_PASSWORD}@host:3306/db`"),
    ("sqlite", "SQLite: `url: sqlite://data/app.db` (relative to the pipeline file) or `sqlite:///abs/path.db`"),
    ("odbc", "any ODBC driver (Oracle, SQL Server, ...): `url: \"Driver={...};Server=...;Pwd=${PASSWORD}\"`"),
];

fn check_connections(pipeline: &Pipeline, env: &Environment, out: &mut Vec<Diagnostic>) {
    for (name, conn) in &pipeline.connections {
        if !CONNECTION_KINDS.iter().any(|(k, _)| *k == conn.kind.value) {
            let known: Vec<&str> = CONNECTION_KINDS.iter().map(|(k, _)| *k).collect();
            out.push(Diagnostic::at(&conn.kind, format!("connection `{name}`: unknown kind `{}`", conn.kind.value))
                .with_hint(format!("use one of {}", known.join(", "))));
        }
        if conn.url.is_none() {
            out.push(Diagnostic::at(&conn.kind, format!("connection `{name}` has no `url`")));
        }
        let values = conn.url.iter().chain(conn.options.values());
        for value in values {
            for var in env_references(&value.value) {
                if env.get(var).is_none() {
                    out.push(
                        Diagnostic::at(value, format!("connection `{name}` needs environment variable `{var}`, which is not set"))
                            .with_hint(format!("export {var}=... before running; its value is never printed")),
                    );
                }
            }
        }
    }
}

fn check_steps(pipeline: &Pipeline, out: &mut Vec<Diagnostic>) {
    let mut seen_sink = HashSet::new();
    for step in &pipeline.steps {
        if !IDENT.is_match(step.id()) {
            out.push(
                Diagnostic::at(&step.id, format!("step id `{}` is not a SQL identifier", step.id()))
                    .with_hint("use letters, digits and `_`, not starting with a digit, so SQL can name it"),
            );
        }
        if let Some(input) = step.kind.input() {
            match pipeline.step(&input.value) {
                None => out.push(unknown_step(pipeline, &input.value, Pos::of(input))),
                Some(target) if matches!(target.kind.category(), Category::Load | Category::Action) => out.push(Diagnostic::at(
                    input,
                    format!("`{}` is a {} step; it has no output to read", input.value, target.kind.name()),
                )),
                Some(_) if input.value == step.id() => {
                    out.push(Diagnostic::at(input, format!("step `{}` reads itself", step.id())))
                }
                Some(_) => {}
            }
        }
        let paths = step.kind.file_source().map(|s| s.path).into_iter().chain(step.kind.file_sink().map(|s| s.path));
        for path in paths {
            check_template(pipeline, &path.value, Pos::of(path), out);
        }
        if let Some(sink) = step.kind.file_sink()
            && !seen_sink.insert(sink.path.value.clone())
        {
            out.push(Diagnostic::at(sink.path, format!("two load steps write `{}`", sink.path.value)));
        }
        match &step.kind {
            StepKind::Validate(v) => {
                if v.rules.is_empty() {
                    out.push(Diagnostic::new(step.kind_pos, "a validate step needs at least one rule"));
                }
                for (key, rule) in &v.rules.0 {
                    if let Rule::Regex { pattern, .. } = rule
                        && let Err(e) = Regex::new(pattern)
                    {
                        // The regex crate's message draws a caret diagram over several lines; its last line says why.
                        let text = e.to_string();
                        let why = text.lines().last().unwrap_or_default().trim_start_matches("error: ");
                        out.push(Diagnostic::at(key, format!("rule `{}`: invalid regex: {why}", key.value)));
                    }
                }
            }
            StepKind::ReadDb(r) => {
                check_connection_ref(pipeline, &r.connection, out);
                if r.relation().is_none() {
                    out.push(Diagnostic::new(step.kind_pos, "a read_db step needs exactly one of `table` and `query`"));
                }
            }
            StepKind::WriteDb(w) => {
                check_connection_ref(pipeline, &w.connection, out);
                let needs_keys = matches!(w.mode, DbWriteMode::Upsert | DbWriteMode::Delete);
                if needs_keys && w.keys.is_empty() {
                    out.push(
                        Diagnostic::new(step.kind_pos, format!("mode `{:?}` needs `keys`", w.mode).to_lowercase())
                            .with_hint("e.g. `keys: [id]`: the columns that identify a row"),
                    );
                }
                if w.delete_when.is_some() && w.mode != DbWriteMode::Upsert {
                    out.push(Diagnostic::new(step.kind_pos, "`delete_when` works with `mode: upsert` only"));
                }
                if !seen_sink.insert(format!("{}/{}", w.connection.value, w.table.value)) {
                    out.push(Diagnostic::at(&w.table, format!("two load steps write table `{}`", w.table.value)));
                }
            }
            StepKind::Execute(e) => check_connection_ref(pipeline, &e.connection, out),
            StepKind::Dedup(d) if d.keys.is_empty() => {
                out.push(Diagnostic::new(step.kind_pos, "a dedup step needs at least one key column"));
            }
            StepKind::Map(m) if m.columns.is_empty() => {
                out.push(Diagnostic::new(step.kind_pos, "a map step needs at least one column"));
            }
            _ => {}
        }
    }
}

fn check_connection_ref(pipeline: &Pipeline, name: &Spanned<String>, out: &mut Vec<Diagnostic>) {
    if !pipeline.connections.contains_key(&name.value) {
        let d = Diagnostic::at(name, format!("unknown connection `{}`", name.value));
        let d = match closest(&name.value, pipeline.connections.keys().map(String::as_str)) {
            Some(best) => d.with_hint(format!("did you mean `{best}`?")),
            None => d.with_hint("declare it under `connections:`"),
        };
        out.push(d);
    }
}

fn check_template(pipeline: &Pipeline, text: &str, pos: Pos, out: &mut Vec<Diagnostic>) {
    for (scope, name) in Template(text).references() {
        let known = match scope {
            "var" => pipeline.variables.contains_key(name),
            "state" => pipeline.state.contains_key(name),
            "run" => matches!(name, "id" | "started_at" | "date"),
            "pipeline" => name == "name",
            _ => {
                out.push(Diagnostic::new(pos, format!("unknown template scope `{scope}`")).with_hint(format!("use one of {}", SCOPES.join(", "))));
                continue;
            }
        };
        if !known {
            out.push(Diagnostic::new(pos, format!("`{{{{ {scope}.{name} }}}}` names no {scope} of this pipeline")));
        }
    }
}

pub(crate) fn unknown_step(pipeline: &Pipeline, name: &str, pos: Pos) -> Diagnostic {
    let d = Diagnostic::new(pos, format!("unknown step `{name}`"));
    match closest(name, pipeline.steps.iter().map(|s| s.id())) {
        Some(best) => d.with_hint(format!("did you mean `{best}`?")),
        None => d,
    }
}

/// The candidate nearest to `name` by edit distance, if it is near enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= c.len().max(name.len()) / 3 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
