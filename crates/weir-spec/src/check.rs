//! Checks that need no engine: references between steps, the DAG, typed defaults, templates, environment.
//! SQL parsing and column checks happen when the engine plans (`weir validate` runs both).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_saphyr::Spanned;

use crate::api::{Paginate, ReadApi, Retry, WriteApi};
use crate::connection_kind::{ConnectionKind, Family, UrlUse};
use crate::diagnostic::{Diagnostic, Pos, did_you_mean};
use crate::model::{Connection, Pipeline, StateUpdate};
use crate::step::{
    AiExtract, Category, DbWriteMode, DeltaWriteMode, FieldType, MaintainDelta, ReadDelta, Rule, Step, StepKind,
    WriteDelta,
};
use crate::template::{SCOPES, Template, env_references};
use crate::value::TypedValue;

static IDENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("static regex"));
static PIPELINE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").expect("static regex"));

/// What the checks see of the world: the process environment (so tests need not set real variables) and the
/// connection kinds this build knows.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<String, String>,
    kinds: Vec<KnownKind>,
}

/// A connection kind and whether this build has it.
#[derive(Debug, Clone, Copy)]
pub struct KnownKind {
    pub kind: &'static ConnectionKind,
    pub built: bool,
}

impl Environment {
    pub fn from_process() -> Self {
        Self { vars: std::env::vars().collect(), kinds: Vec::new() }
    }

    pub fn empty() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// The connection kinds connections are checked against. Without any, kinds and options go unchecked.
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = KnownKind>) -> Self {
        self.kinds.extend(kinds);
        self
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    fn kind(&self, name: &str) -> Option<KnownKind> {
        self.kinds.iter().find(|k| k.kind.name == name).copied()
    }

    /// The family of the kind `name`, where the checks know it.
    fn family(&self, name: &str) -> Option<Family> {
        self.kind(name).map(|k| k.kind.family)
    }

    fn kinds_of(&self, family: Family) -> Vec<&'static str> {
        self.kinds.iter().filter(|k| k.kind.family == family).map(|k| k.kind.name).collect()
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
    check_retry(pipeline.settings.retry.as_ref(), "settings.retry", Pos::of(&pipeline.name), &mut out);
    if pipeline.settings.commit_every == Some(0) {
        out.push(Diagnostic::new(Pos::of(&pipeline.name), "settings.commit_every must be at least 1 row"));
    }
    check_connections(pipeline, env, &mut out);
    check_alerts(pipeline, env, &mut out);
    check_quality(pipeline, &mut out);
    check_triggers(pipeline, env, &mut out);
    check_steps(pipeline, env, &mut out);
    out.sort_by_key(|d| (d.pos.line, d.pos.column));
    out
}

fn check_values(pipeline: &Pipeline, out: &mut Vec<Diagnostic>) {
    for (name, var) in &pipeline.variables {
        if !IDENT.is_match(name) {
            out.push(Diagnostic::at(
                var,
                format!("variable name `{name}` is not an identifier SQL can bind as ${name}"),
            ));
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
                Some((step, _)) => {
                    out.push(Diagnostic::at(target, format!("state `{name}` takes its max from unknown step `{step}`")))
                }
                None => out.push(
                    Diagnostic::at(target, format!("state `{name}`: `{}` is not `step.column`", target.value))
                        .with_hint("e.g. `update: { max: orders.updated_at }`"),
                ),
            }
        }
    }
}

fn check_connections(pipeline: &Pipeline, env: &Environment, out: &mut Vec<Diagnostic>) {
    for (name, conn) in &pipeline.connections {
        if !env.kinds.is_empty() {
            check_kind(name, conn, env, out);
        }
        let values = conn.url.iter().chain(conn.options.iter().map(|(_, v)| v));
        for value in values {
            for var in env_references(&value.value) {
                if env.get(var).is_none() {
                    out.push(
                        Diagnostic::at(
                            value,
                            format!("connection `{name}` needs environment variable `{var}`, which is not set"),
                        )
                        .with_hint(format!("export {var}=... before running; its value is never printed")),
                    );
                }
            }
        }
    }
}

/// The connection's kind exists and is built, its `url` is there when the kind needs one, and every option is one
/// the kind takes, with a value of its type.
fn check_kind(name: &str, conn: &Connection, env: &Environment, out: &mut Vec<Diagnostic>) {
    let Some(known) = env.kind(&conn.kind.value) else {
        let names = env.kinds.iter().map(|k| k.kind.name);
        let mut diagnostic =
            Diagnostic::at(&conn.kind, format!("connection `{name}`: unknown kind `{}`", conn.kind.value));
        diagnostic = match did_you_mean(&conn.kind.value, names.clone()) {
            Some(near) => diagnostic.with_hint(format!("did you mean `{near}`? (`weir list` shows every kind)")),
            None => diagnostic.with_hint(format!("use one of {}", names.collect::<Vec<_>>().join(", "))),
        };
        out.push(diagnostic);
        return;
    };
    let kind = known.kind;
    if !known.built {
        let feature = kind.feature.unwrap_or(kind.name);
        out.push(
            Diagnostic::at(
                &conn.kind,
                format!("connection `{name}` is of kind `{}`, which this build of weir leaves out", kind.name),
            )
            .with_hint(format!("build weir with `--features {feature}` (see docs/databases.md)")),
        );
    }
    if conn.url.is_none()
        && let UrlUse::Required(example) = kind.url
    {
        out.push(
            Diagnostic::at(&conn.kind, format!("connection `{name}` has no `url`"))
                .with_hint(format!("e.g. `url: {example}`")),
        );
    }
    for (key, value) in &conn.options.0 {
        match kind.option(&key.value) {
            None => {
                let message =
                    format!("connection `{name}`: `{}` connections take no option `{}`", kind.name, key.value);
                let names = kind.options().map(|o| o.name);
                let hint = match did_you_mean(&key.value, names.clone()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None if kind.options().next().is_none() => format!("`{}` connections take no options", kind.name),
                    None => format!("options of `{}`: {}", kind.name, names.collect::<Vec<_>>().join(", ")),
                };
                out.push(Diagnostic::at(key, message).with_hint(hint));
            }
            Some(option) => {
                if let Some(why) = option.ty.mismatch(&value.value) {
                    out.push(Diagnostic::at(value, format!("connection `{name}`, option `{}`: {why}", key.value)));
                }
            }
        }
    }
}

fn check_alerts(pipeline: &Pipeline, env: &Environment, out: &mut Vec<Diagnostic>) {
    for (i, alert) in pipeline.alerts.iter().enumerate() {
        let targets: Vec<&Spanned<String>> =
            alert.slack.iter().chain(&alert.webhook).chain(alert.email.as_ref().map(|e| &e.smtp)).collect();
        if targets.len() != 1 {
            let at = targets.first().map_or(Pos::default(), |t| Pos::of(*t));
            out.push(Diagnostic::new(
                at,
                format!("alert {}: give exactly one of `slack`, `webhook` and `email`", i + 1),
            ));
        }
        if let Some(email) = &alert.email
            && email.to.is_empty()
        {
            out.push(Diagnostic::at(
                &email.smtp,
                format!("alert {}: an email needs at least one address in `to`", i + 1),
            ));
        }
        for target in targets {
            for var in env_references(&target.value) {
                if env.get(var).is_none() {
                    out.push(
                        Diagnostic::at(
                            target,
                            format!("alert {} needs environment variable `{var}`, which is not set", i + 1),
                        )
                        .with_hint(format!("export {var}=... before running; its value is never printed")),
                    );
                }
            }
        }
    }
}

fn check_triggers(pipeline: &Pipeline, env: &Environment, out: &mut Vec<Diagnostic>) {
    for (i, trigger) in pipeline.triggers.iter().enumerate() {
        trigger.check(i, out);
        for secret in trigger.secrets() {
            for var in env_references(&secret.value) {
                if env.get(var).is_none() {
                    out.push(
                        Diagnostic::at(
                            secret,
                            format!("trigger {} needs environment variable `{var}`, which is not set", i + 1),
                        )
                        .with_hint(format!("export {var}=... before running; its value is never printed")),
                    );
                }
            }
        }
    }
    if let Some(target) = &pipeline.settings.dead_letters {
        match (&target.path, &target.connection) {
            (Some(_), None) => {}
            (None, Some(name)) if !pipeline.connections.contains_key(&name.value) => {
                out.push(Diagnostic::at(name, format!("settings.dead_letters: unknown connection `{}`", name.value)));
            }
            (None, Some(name))
                if pipeline.connections[&name.value].kind.value == "sqlite"
                    && pipeline
                        .steps
                        .iter()
                        .any(|s| matches!(&s.kind, StepKind::WriteDb(w) if w.connection.value == name.value)) =>
            {
                out.push(
                    Diagnostic::at(name, format!("settings.dead_letters: `{}` is also loaded by this pipeline", name.value))
                        .with_hint("SQLite has one writer and a load holds it for the whole run: use another SQLite file, or `path`"),
                );
            }
            (None, Some(name)) => {
                let kind = env.kind(&pipeline.connections[&name.value].kind.value);
                if let Some(known) = kind.filter(|k| !k.kind.can.dead_letters) {
                    let able: Vec<&str> =
                        env.kinds.iter().filter(|k| k.kind.can.dead_letters).map(|k| k.kind.name).collect();
                    out.push(
                        Diagnostic::at(
                            name,
                            format!(
                                "settings.dead_letters: `{}` connections cannot hold dead letters",
                                known.kind.name
                            ),
                        )
                        .with_hint(format!("use a connection of kind {}, or `path` for NDJSON files", able.join(", "))),
                    );
                }
            }
            _ => out.push(Diagnostic::new(
                Pos::of(&pipeline.name),
                "settings.dead_letters: give exactly one of `path` and `connection`",
            )),
        }
    }
    if pipeline.settings.concurrency == 0 {
        out.push(Diagnostic::new(Pos::of(&pipeline.name), "settings.concurrency must be at least 1"));
    }
}

fn check_quality(pipeline: &Pipeline, out: &mut Vec<Diagnostic>) {
    for (name, check) in &pipeline.checks {
        let Some(step) = pipeline.step(&check.step.value) else {
            out.push(
                Diagnostic::at(
                    &check.step,
                    format!("check `{name}` is on step `{}`, which does not exist", check.step.value),
                )
                .with_hint(format!("steps: {}", pipeline.steps.iter().map(|s| s.id()).collect::<Vec<_>>().join(", "))),
            );
            continue;
        };
        if matches!(step.kind.category(), crate::step::Category::Load | crate::step::Category::Action) {
            out.push(Diagnostic::at(
                &check.step,
                format!("check `{name}`: `{}` loads or acts and has no output to check; check its input", step.id()),
            ));
        }
        if check.min_rows.is_none()
            && check.max_rows.is_none()
            && check.unique.is_empty()
            && check.not_null.is_empty()
            && check.condition.is_none()
        {
            out.push(
                Diagnostic::at(&check.step, format!("check `{name}` checks nothing"))
                    .with_hint("give min_rows, max_rows, unique, not_null or condition"),
            );
        }
    }
}

fn check_steps(pipeline: &Pipeline, env: &Environment, out: &mut Vec<Diagnostic>) {
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
                Some(target) if matches!(target.kind.category(), Category::Load | Category::Action) => {
                    out.push(Diagnostic::at(
                        input,
                        format!("`{}` is a {} step; it has no output to read", input.value, target.kind.name()),
                    ))
                }
                Some(_) if input.value == step.id() => {
                    out.push(Diagnostic::at(input, format!("step `{}` reads itself", step.id())))
                }
                Some(_) => {}
            }
        }
        let connections = step
            .kind
            .file_source()
            .and_then(|s| s.connection)
            .into_iter()
            .chain(step.kind.file_sink().and_then(|s| s.connection))
            .chain(
                match &step.kind {
                    StepKind::ListFiles(l) => vec![l.connection.as_ref()],
                    StepKind::CopyFiles(c) => vec![c.from_connection.as_ref(), c.connection.as_ref()],
                    StepKind::ReadDelta(d) => vec![d.connection.as_ref()],
                    StepKind::WriteDelta(d) => vec![d.connection.as_ref()],
                    StepKind::MaintainDelta(d) => vec![d.connection.as_ref()],
                    StepKind::ReadIceberg(i) => vec![i.connection.as_ref()],
                    StepKind::WriteIceberg(i) => vec![i.connection.as_ref()],
                    _ => Vec::new(),
                }
                .into_iter()
                .flatten(),
            );
        for name in connections {
            check_connection_ref(pipeline, name, out);
            if let Some(conn) = pipeline.connections.get(&name.value)
                && env.family(&conn.kind.value).is_some_and(|f| f == Family::Database)
            {
                let stores = [env.kinds_of(Family::ObjectStore), env.kinds_of(Family::Http)].concat();
                out.push(
                    Diagnostic::at(
                        name,
                        format!("connection `{}` is of kind `{}`, which holds no files", name.value, conn.kind.value),
                    )
                    .with_hint(format!("file steps take a connection of kind {}", stores.join(", "))),
                );
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
            StepKind::ReadApi(api) => check_read_api(pipeline, step, api, out),
            StepKind::WriteApi(api) => check_write_api(pipeline, step, api, out),
            StepKind::ListFiles(l) => {
                check_template(pipeline, &l.path.value, Pos::of(&l.path), out);
                if let Some(since) = &l.since {
                    check_template(pipeline, &since.value, Pos::of(since), out);
                }
            }
            StepKind::CopyFiles(c) => check_template(pipeline, &c.to.value, Pos::of(&c.to), out),
            StepKind::EnrichApi(api) => {
                check_http_connection(pipeline, step, api.connection.as_ref(), out);
                check_template(pipeline, &api.url.value, Pos::of(&api.url), out);
                if api.keys.is_empty() {
                    out.push(Diagnostic::new(step.kind_pos, "an enrich_api step needs at least one key column"));
                }
                if api.concurrency == 0 {
                    out.push(Diagnostic::new(step.kind_pos, "concurrency must be at least 1"));
                }
                check_retry(api.retry.as_ref(), "retry", step.kind_pos, out);
            }
            StepKind::AiExtract(x) => check_ai_extract(pipeline, step, x, out),
            StepKind::WriteDb(w) => {
                check_retry(w.retry.as_ref(), "retry", step.kind_pos, out);
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
            StepKind::ReadDelta(d) => check_read_delta(pipeline, step, d, out),
            StepKind::MaintainDelta(d) => check_maintain_delta(pipeline, step, d, out),
            StepKind::WriteDelta(d) => {
                check_write_delta(pipeline, step, d, out);
                if !seen_sink.insert(d.path.value.clone()) {
                    out.push(Diagnostic::at(&d.path, format!("two load steps write `{}`", d.path.value)));
                }
            }
            StepKind::ReadIceberg(i) => {
                if let Some(catalog) = &i.catalog {
                    check_catalog(pipeline, env, catalog, out);
                }
                if let Some(file) = &i.metadata {
                    check_template(pipeline, &file.value, Pos::of(file), out);
                }
                if i.source().is_none() {
                    out.push(
                        Diagnostic::new(
                            step.kind_pos,
                            "a read_iceberg step needs `catalog` and `table`, or `metadata`",
                        )
                        .with_hint("`catalog` names an iceberg_rest connection; `metadata` a table's metadata file"),
                    );
                }
                if let Some(timestamp) = &i.timestamp {
                    check_template(pipeline, &timestamp.value, Pos::of(timestamp), out);
                    if i.snapshot_id.is_some() {
                        out.push(Diagnostic::new(
                            step.kind_pos,
                            "a read_iceberg step takes at most one of `snapshot_id` and `timestamp`",
                        ));
                    }
                }
            }
            StepKind::WriteIceberg(i) => {
                check_catalog(pipeline, env, &i.catalog, out);
                if !seen_sink.insert(format!("{}/{}", i.catalog.value, i.table.value)) {
                    out.push(Diagnostic::at(&i.table, format!("two load steps write table `{}`", i.table.value)));
                }
            }
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

fn check_read_delta(pipeline: &Pipeline, step: &Step, d: &ReadDelta, out: &mut Vec<Diagnostic>) {
    check_template(pipeline, &d.path.value, Pos::of(&d.path), out);
    for text in [&d.timestamp, &d.changes_since].into_iter().flatten() {
        check_template(pipeline, &text.value, Pos::of(text), out);
    }
    let chosen = [d.version.is_some(), d.timestamp.is_some(), d.changes_since.is_some()];
    if chosen.iter().filter(|c| **c).count() > 1 {
        out.push(
            Diagnostic::new(
                step.kind_pos,
                "a read_delta step takes at most one of `version`, `timestamp` and `changes_since`",
            )
            .with_hint(
                "`version`/`timestamp` read one old version whole; `changes_since` reads what changed after one",
            ),
        );
    }
}

fn check_write_delta(pipeline: &Pipeline, step: &Step, d: &WriteDelta, out: &mut Vec<Diagnostic>) {
    check_template(pipeline, &d.path.value, Pos::of(&d.path), out);
    let needs_keys = matches!(d.mode, DeltaWriteMode::Upsert | DeltaWriteMode::Delete);
    if needs_keys && d.keys.is_empty() {
        out.push(
            Diagnostic::new(step.kind_pos, format!("mode `{:?}` needs `keys`", d.mode).to_lowercase())
                .with_hint("e.g. `keys: [id]`: the columns that identify a row"),
        );
    }
    if d.delete_when.is_some() && d.mode != DeltaWriteMode::Upsert {
        out.push(Diagnostic::new(step.kind_pos, "`delete_when` works with `mode: upsert` only"));
    }
    if let Some(predicate) = &d.replace_where {
        check_template(pipeline, &predicate.value, Pos::of(predicate), out);
        if d.mode != DeltaWriteMode::Overwrite {
            out.push(Diagnostic::at(predicate, "`replace_where` works with `mode: overwrite` only"));
        }
    }
}

fn check_maintain_delta(pipeline: &Pipeline, step: &Step, d: &MaintainDelta, out: &mut Vec<Diagnostic>) {
    check_template(pipeline, &d.path.value, Pos::of(&d.path), out);
    if !d.optimize && d.vacuum.is_none() && !d.checkpoint {
        out.push(
            Diagnostic::new(step.kind_pos, "a maintain_delta step has nothing to do").with_hint(
                "set `optimize: true`, `vacuum: 168h` (the span of time travel to keep) or `checkpoint: true`",
            ),
        );
    }
}

/// The `catalog` of an Iceberg step: a declared connection of a catalog kind.
fn check_catalog(pipeline: &Pipeline, env: &Environment, name: &Spanned<String>, out: &mut Vec<Diagnostic>) {
    check_connection_ref(pipeline, name, out);
    if let Some(conn) = pipeline.connections.get(&name.value)
        && env.family(&conn.kind.value).is_some_and(|f| f != Family::Catalog)
    {
        out.push(
            Diagnostic::at(
                name,
                format!("connection `{}` is of kind `{}`, not a catalog", name.value, conn.kind.value),
            )
            .with_hint(format!("Iceberg steps take a connection of kind {}", env.kinds_of(Family::Catalog).join(", "))),
        );
    }
}

fn check_retry(retry: Option<&Retry>, name: &str, pos: Pos, out: &mut Vec<Diagnostic>) {
    if retry.is_some_and(|r| r.max_attempts == 0) {
        out.push(Diagnostic::new(
            pos,
            format!("{name}.max_attempts counts the first try too, so it must be at least 1"),
        ));
    }
}

fn check_http_connection(
    pipeline: &Pipeline,
    step: &Step,
    connection: Option<&Spanned<String>>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(name) = connection else { return };
    check_connection_ref(pipeline, name, out);
    if let Some(conn) = pipeline.connections.get(&name.value)
        && conn.kind.value != "http"
    {
        let kind = step.kind.name();
        out.push(Diagnostic::at(
            name,
            format!("connection `{}` is of kind `{}`; {kind} needs an `http` connection", name.value, conn.kind.value),
        ));
    }
}

fn check_write_api(pipeline: &Pipeline, step: &Step, api: &WriteApi, out: &mut Vec<Diagnostic>) {
    check_http_connection(pipeline, step, api.connection.as_ref(), out);
    check_template(pipeline, &api.url.value, Pos::of(&api.url), out);
    for (key, value) in api.headers.0.iter() {
        check_template(pipeline, value, Pos::of(key), out);
    }
    if api.batch_size == 0 || api.concurrency == 0 {
        out.push(Diagnostic::new(step.kind_pos, "batch_size and concurrency must be at least 1"));
    }
    if api.batch_size > 1 && RECORD_FIELD.is_match(&api.url.value.replace("{{", "").replace("}}", "")) {
        out.push(Diagnostic::at(
            &api.url,
            "`{column}` in the URL needs `batch_size: 1`: a batch has no single record to take it from",
        ));
    }
    check_retry(api.retry.as_ref(), "retry", step.kind_pos, out);
}

/// `{column}` in a `write_api` URL.
static RECORD_FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{[A-Za-z_][A-Za-z0-9_]*\}").expect("static regex"));

fn check_read_api(pipeline: &Pipeline, step: &Step, api: &ReadApi, out: &mut Vec<Diagnostic>) {
    check_http_connection(pipeline, step, api.connection.as_ref(), out);
    let templated = std::iter::once(&api.url).chain(api.body.as_ref());
    for text in templated {
        check_template(pipeline, &text.value, Pos::of(text), out);
    }
    for (key, value) in api.headers.0.iter().chain(&api.query.0) {
        check_template(pipeline, value, Pos::of(key), out);
    }
    for path in api.records.iter().chain(&api.has_more) {
        if let Err(e) = serde_json_path::JsonPath::parse(&path.value) {
            out.push(
                Diagnostic::at(path, format!("`{}` is not a JSONPath: {e}", path.value))
                    .with_hint("e.g. `$.data` or `$.result.items[*]`"),
            );
        }
    }
    let page_path = match &api.paginate {
        Some(Paginate::Cursor { from, .. }) => Some(from),
        Some(Paginate::NextUrl(path)) => Some(path),
        _ => None,
    };
    if let Some(path) = page_path
        && let Err(e) = serde_json_path::JsonPath::parse(path)
    {
        out.push(Diagnostic::new(step.kind_pos, format!("paginate: `{path}` is not a JSONPath: {e}")));
    }
    check_retry(api.retry.as_ref(), "retry", step.kind_pos, out);
    if api.requests_per_second.is_some_and(|r| r.is_nan() || r <= 0.0) {
        out.push(Diagnostic::new(step.kind_pos, "requests_per_second must be above 0"));
    }
}

fn check_ai_extract(pipeline: &Pipeline, step: &Step, x: &AiExtract, out: &mut Vec<Diagnostic>) {
    check_connection_ref(pipeline, &x.connection, out);
    if let Some(conn) = pipeline.connections.get(&x.connection.value)
        && conn.kind.value != "openai"
    {
        out.push(Diagnostic::at(
            &x.connection,
            format!(
                "connection `{}` is of kind `{}`; ai_extract needs an `openai` connection",
                x.connection.value, conn.kind.value
            ),
        ));
    }
    if x.text.is_some() == x.template.is_some() {
        out.push(
            Diagnostic::new(step.kind_pos, "an ai_extract step needs exactly one of `text` and `template`")
                .with_hint("`text: raw_address` names a column; `template: \"{name}, {address}\"` joins several"),
        );
    }
    match x.field_list() {
        Ok(fields) if fields.is_empty() => {
            out.push(Diagnostic::new(step.kind_pos, "an ai_extract step needs at least one field"));
        }
        Ok(fields) => {
            for (name, field) in &fields {
                if let Some(bad) = field.allowed.iter().find(|v| !fits_type(v, field.ty)) {
                    out.push(Diagnostic::new(
                        step.kind_pos,
                        format!("field `{name}`: enum value {bad} is not of type {}", field.ty.name()),
                    ));
                }
            }
        }
        Err(why) => out.push(Diagnostic::new(step.kind_pos, why)),
    }
    if x.batch_size == 0 || x.concurrency == 0 {
        out.push(Diagnostic::new(step.kind_pos, "batch_size and concurrency must be at least 1"));
    }
    if x.requests_per_minute == Some(0) || x.tokens_per_minute == Some(0) {
        out.push(Diagnostic::new(step.kind_pos, "requests_per_minute and tokens_per_minute must be above 0"));
    }
    check_retry(x.retry.as_ref(), "retry", step.kind_pos, out);
}

/// Whether an enum value is of a field's type.
fn fits_type(value: &serde_json::Value, ty: FieldType) -> bool {
    match ty {
        FieldType::String => value.is_string(),
        FieldType::Integer => value.is_i64() || value.is_u64(),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
    }
}

fn check_connection_ref(pipeline: &Pipeline, name: &Spanned<String>, out: &mut Vec<Diagnostic>) {
    if !pipeline.connections.contains_key(&name.value) {
        let d = Diagnostic::at(name, format!("unknown connection `{}`", name.value));
        let d = match did_you_mean(&name.value, pipeline.connections.keys().map(String::as_str)) {
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
                out.push(
                    Diagnostic::new(pos, format!("unknown template scope `{scope}`"))
                        .with_hint(format!("use one of {}", SCOPES.join(", "))),
                );
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
    match did_you_mean(name, pipeline.steps.iter().map(|s| s.id())) {
        Some(best) => d.with_hint(format!("did you mean `{best}`?")),
        None => d,
    }
}
