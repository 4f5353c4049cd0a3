//! One test case: its runs, each on the pipeline as the case changes it (given data, mocked APIs, real
//! connections), against the case's own state store, then every expectation compared.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use datafusion::arrow::array::Array;
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use weir_engine::{CancellationToken, DeadLetterFilter, Engine, EngineError, RunMetrics, RunOptions, StateStore};
use weir_spec::{
    Category, CheckOutcome, Expect, Extract, Given, Pipeline, RealConnection, Role, Spanned, Step, StepKind, TestCase,
    TestRun, TypedValue,
};

use super::captured::{Destinations, Table};
use super::connectors::{StandIn, TestConnectors, connection_of};
use super::mock_api::MockApi;
use super::rows;

/// A test file and the pipeline it tests.
pub struct Suite {
    pub file: PathBuf,
    pub pipeline_file: PathBuf,
    pub text: String,
    pub env: BTreeMap<String, String>,
    /// `--update`: differing expected rows are rewritten instead of failing the case.
    pub update: bool,
}

impl Suite {
    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// Where the pipeline's relative paths start, as for `weir run`.
    fn pipeline_dir(&self) -> PathBuf {
        let dir = self.pipeline_file.parent().map(Path::to_path_buf);
        dir.filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into())
    }
}

/// How a case ended.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    /// What the runs produced differs from what the case expects.
    Failed(Vec<String>),
    /// The case could not be run (a missing fixture, a step the pipeline does not have).
    Error(String),
}

/// Expected rows to write back (`--update`): the rows value at `line` of the test file, each row a JSON object.
#[derive(Debug, Clone)]
pub struct Update {
    pub line: u64,
    pub rows: Vec<String>,
}

pub struct CaseReport {
    pub name: String,
    pub outcome: Outcome,
    pub seconds: f64,
    pub updates: Vec<Update>,
}

/// The step a case adds to read an expected step's rows, when that step is no load itself.
fn observer(step: &str) -> String {
    format!("{step}__weir_test_rows")
}

pub async fn run_case(suite: Arc<Suite>, name: Spanned<String>, case: TestCase) -> CaseReport {
    let clock = Instant::now();
    let mut updates = Vec::new();
    let outcome = match run_all(&suite, case, &mut updates).await {
        Ok(failures) if failures.is_empty() => Outcome::Passed,
        Ok(failures) => Outcome::Failed(failures),
        Err(e) => Outcome::Error(format!("{e:#}")),
    };
    CaseReport { name: name.value, outcome, seconds: clock.elapsed().as_secs_f64(), updates }
}

async fn run_all(suite: &Suite, case: TestCase, updates: &mut Vec<Update>) -> anyhow::Result<Vec<String>> {
    let tmp = tempfile::tempdir().context("cannot make the case's temporary directory")?;
    let store = Arc::new(StateStore::in_memory()?);
    let declared = parse(suite)?;
    for (name, value) in &case.state {
        let decl =
            declared.state.get(name).with_context(|| format!("`state.{name}`: the pipeline declares no such state"))?;
        let typed = TypedValue::from_json(decl.value.ty, value).map_err(|e| anyhow!("`state.{name}`: {e}"))?;
        store.set_state(declared.name(), name, &typed)?;
    }
    let connections = case.connections.clone();
    let destinations = Destinations::default();
    let runs = case.into_runs();
    let many = runs.len() > 1;
    let mut failures = Vec::new();
    for (i, run) in runs.into_iter().enumerate() {
        let label = if many { format!("run {}: ", i + 1) } else { String::new() };
        let prepared = prepare(suite, &connections, &run, tmp.path()).await?;
        let before = snapshot(&prepared).await;
        let run_id = uuid::Uuid::now_v7().to_string();
        let connectors = TestConnectors {
            stand_ins: prepared.stand_ins.clone(),
            destinations: destinations.clone(),
            real: prepared.real.clone(),
        };
        let engine = Engine::new(Arc::new(connectors), store.clone());
        let options = RunOptions {
            variables: run.variables.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect(),
            run_id: Some(run_id.clone()),
            ..options(suite.pipeline_dir(), tmp.path())
        };
        let result = engine.run(&prepared.pipeline, &options, RunMetrics::default()).await;
        let mut found = Vec::new();
        if result.is_err() && !before.is_empty() {
            let after = snapshot(&prepared).await;
            for ((table, was), (_, now)) in before.iter().zip(&after) {
                if was != now {
                    found.push(format!("the failed run changed {table}: it must roll back"));
                }
            }
        }
        let seen = Seen {
            prepared: &prepared,
            store: &store,
            run_id: &run_id,
            destinations: &destinations,
            update: suite.update,
        };
        found.extend(seen.compare(&result, &run.expect, updates).await?);
        for (step, mock) in &prepared.mocks {
            found.extend(mock.problems(true).into_iter().map(|p| format!("`{step}`'s API: {p}")));
        }
        failures.extend(found.into_iter().map(|f| format!("{label}{f}")));
    }
    Ok(failures)
}

/// The pipeline of one run, changed as the case says.
struct Prepared {
    pipeline: Pipeline,
    stand_ins: HashMap<String, StandIn>,
    mocks: Vec<(String, MockApi)>,
    real: BTreeSet<String>,
}

fn parse(suite: &Suite) -> anyhow::Result<Pipeline> {
    let shown = suite.pipeline_file.display().to_string();
    Pipeline::from_yaml_str(&suite.text).map_err(|d| anyhow!("{}", d.display_in(&shown)))
}

async fn prepare(
    suite: &Suite,
    real: &BTreeMap<String, RealConnection>,
    run: &TestRun,
    tmp: &Path,
) -> anyhow::Result<Prepared> {
    let mut pipeline = parse(suite)?;
    let mut stand_ins = HashMap::new();
    let mut mocks = Vec::new();
    for (id, given) in &run.given {
        let index = pipeline
            .steps
            .0
            .iter()
            .position(|s| s.id() == id && s.kind.category() == Category::Extract)
            .with_context(|| format!("`given.{id}`: the pipeline has no extract step `{id}`"))?;
        let context = || format!("`given.{id}`");
        if let Some(stand_in) = stand_in(suite, &mut pipeline, index, given).with_context(context)? {
            stand_ins.insert(id.clone(), stand_in);
        }
        if let Some(responses) = &given.responses {
            let mock = MockApi::start(responses.clone()).await.with_context(context)?;
            point_at(&mut pipeline, index, &mock.base_url).with_context(context)?;
            mocks.push((id.clone(), mock));
        }
    }
    let dir = tmp.display().to_string();
    for (name, with) in real {
        let conn = pipeline
            .connections
            .get_mut(name)
            .with_context(|| format!("`connections.{name}`: the pipeline has no such connection"))?;
        let url = with.url.replace("{{ test.dir }}", &dir);
        match &mut conn.url {
            Some(spanned) => spanned.value = url,
            None => bail!("`connections.{name}`: the pipeline's connection has no url to replace"),
        }
        for (key, value) in &with.options {
            match conn.options.0.iter_mut().find(|(k, _)| k.value == *key) {
                Some((_, v)) => v.value = value.replace("{{ test.dir }}", &dir),
                None => bail!("`connections.{name}.options.{key}`: set it in the pipeline for the case to replace it"),
            }
        }
    }
    for conn in pipeline.connections.values_mut() {
        let lookup = |var: &str| suite.env.get(var).cloned().or_else(|| Some(format!("${{{var}}}")));
        let fill =
            |text: &mut String| *text = weir_spec::interpolate_env(text, lookup).unwrap_or_else(|_| text.clone());
        if let Some(url) = &mut conn.url {
            fill(&mut url.value);
        }
        for (_, value) in conn.options.0.iter_mut() {
            fill(&mut value.value);
        }
    }
    // Dead letters stay in the case's own store, where the case reads them.
    pipeline.settings.dead_letters = None;
    let mut env = weir_connectors::registry::environment();
    for (name, value) in &suite.env {
        env = env.with(name, value);
    }
    // A connection only captured loads use is never opened: its secrets need not be set.
    let opened = opened_connections(&pipeline, &stand_ins);
    for (name, conn) in &pipeline.connections {
        if real.contains_key(name) || opened.contains(name.as_str()) {
            continue;
        }
        let texts =
            conn.url.iter().map(|u| u.value.as_str()).chain(conn.options.0.iter().map(|(_, v)| v.value.as_str()));
        for var in texts.flat_map(weir_spec::env_references) {
            env = env.with(var, "(not opened by weir test)");
        }
    }
    let diagnostics = weir_spec::check(&pipeline, &env);
    if !diagnostics.is_empty() {
        let shown = suite.pipeline_file.display().to_string();
        let lines: Vec<String> = diagnostics.iter().map(|d| d.display_in(&shown).to_string()).collect();
        bail!("the pipeline has mistakes:\n{}", lines.join("\n"));
    }
    for id in run.expect.steps.iter().map(|(id, _)| id) {
        let step =
            pipeline.step(id).with_context(|| format!("`expect.steps.{id}`: the pipeline has no step `{id}`"))?;
        if !matches!(step.kind.category(), Category::Load | Category::Action) {
            pipeline.steps.0.push(observer_step(id)?);
        }
    }
    Ok(Prepared { pipeline, stand_ins, mocks, real: real.keys().cloned().collect() })
}

/// What replaces extract step `index`'s data; `None` when the step itself is changed to read the data (a file
/// step reading the fixture, an API step its mock).
fn stand_in(suite: &Suite, pipeline: &mut Pipeline, index: usize, given: &Given) -> anyhow::Result<Option<StandIn>> {
    if let Some(rows) = &given.rows {
        return Ok(Some(StandIn::Rows(rows::from_json(&rows.value)?)));
    }
    let Some(file) = &given.file else { return Ok(None) };
    let path = suite.dir().join(&file.value);
    if !path.is_file() {
        bail!("fixture file {} does not exist", path.display());
    }
    let absolute = std::path::absolute(&path)?.display().to_string();
    let step = &mut pipeline.steps.0[index];
    let (target, connection) = match &mut step.kind {
        StepKind::ReadCsv(s) => (&mut s.path, &mut s.connection),
        StepKind::ReadJson(s) => (&mut s.path, &mut s.connection),
        StepKind::ReadParquet(s) => (&mut s.path, &mut s.connection),
        _ => return Ok(Some(StandIn::File(path))),
    };
    target.value = absolute;
    *connection = None;
    Ok(None)
}

/// Sends an API step's requests to `base` (keeping the path its URL or its connection's URL has).
fn point_at(pipeline: &mut Pipeline, index: usize, base: &str) -> anyhow::Result<()> {
    let step = &mut pipeline.steps.0[index];
    let (connection, url) = match &mut step.kind {
        StepKind::ReadApi(s) => (s.connection.clone(), &mut s.url),
        StepKind::EnrichApi(s) => (s.connection.clone(), &mut s.url),
        other => bail!("`responses` are for `read_api` and `enrich_api` steps, not `{}`", other.name()),
    };
    if url.value.contains("://") {
        url.value = rebase(&url.value, base);
        return Ok(());
    }
    let name = connection.context("its relative `url` needs a `connection`")?;
    let template = url.clone();
    let conn = pipeline.connections.get_mut(&name.value).with_context(|| format!("no connection `{}`", name.value))?;
    let url = conn.url.get_or_insert(template);
    url.value = rebase(&url.value, base);
    Ok(())
}

/// `url` with its scheme and host replaced by `base`'s; a URL still naming `${VAR}` keeps only its path.
fn rebase(url: &str, base: &str) -> String {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{base}{path}")
}

/// Connections that a run opens: those of extract steps that read for real, of API steps (mocked ones too: their
/// authentication still applies) and of AI extraction.
fn opened_connections<'a>(pipeline: &'a Pipeline, stand_ins: &HashMap<String, StandIn>) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for step in pipeline.steps.iter().filter(|s| !stand_ins.contains_key(s.id())) {
        let Role::Extract(extract) = step.kind.role() else { continue };
        let name = match extract {
            Extract::ReadCsv(s) => s.connection.as_ref(),
            Extract::ReadJson(s) => s.connection.as_ref(),
            Extract::ReadParquet(s) => s.connection.as_ref(),
            Extract::ListFiles(s) => s.connection.as_ref(),
            Extract::ReadDb(s) => Some(&s.connection),
            Extract::ReadApi(s) => s.connection.as_ref(),
            Extract::EnrichApi(s) => s.connection.as_ref(),
            Extract::AiExtract(s) => Some(&s.connection),
            Extract::ReadDelta(s) => s.connection.as_ref(),
            Extract::ReadIceberg(s) => s.catalog.as_ref().or(s.connection.as_ref()),
            Extract::ReadWebhook(_) => None,
        };
        out.extend(name.map(|n| n.value.as_str()));
    }
    out
}

/// A load that captures `step`'s rows in this run, for a case that expects them of a step that is no load.
fn observer_step(step: &str) -> anyhow::Result<Step> {
    let quoted = serde_json::to_string(step)?;
    let yaml = format!(
        "name: observer\nsteps:\n  {}:\n    write_json: {{ input: {quoted}, path: unused.json }}\n",
        serde_json::to_string(&observer(step))?
    );
    let mut parsed = Pipeline::from_yaml_str(&yaml).map_err(|d| anyhow!("{}", d.message))?;
    parsed.steps.0.pop().context("the observer step")
}

/// The rows of every `write_db` table on a connection the case uses for real, to tell whether a failed run rolled
/// back. A table that cannot be read (not created yet) is `None`.
async fn snapshot(prepared: &Prepared) -> Vec<(String, Option<Vec<String>>)> {
    let mut out = Vec::new();
    for step in prepared.pipeline.steps.iter() {
        let StepKind::WriteDb(db) = &step.kind else { continue };
        if !prepared.real.contains(&db.connection.value) {
            continue;
        }
        let rows = read_real(&prepared.pipeline, &db.connection.value, &db.table.value).await.ok().map(|t| {
            let mut rows: Vec<String> = rows::to_json(&t.batches)
                .unwrap_or_default()
                .into_iter()
                .map(|r| serde_json::Value::Object(r).to_string())
                .collect();
            rows.sort();
            rows
        });
        out.push((format!("table `{}` of connection `{}`", db.table.value, db.connection.value), rows));
    }
    out
}

/// Every row of `table` on connection `name`, read with Weir's own `read_db`.
async fn read_real(pipeline: &Pipeline, name: &str, table: &str) -> anyhow::Result<Table> {
    let yaml = format!(
        "name: weir-test-read\nsteps:\n  rows:\n    read_db: {{ connection: {}, table: {} }}\n  out:\n    write_json: {{ input: rows, path: unused.json }}\n",
        serde_json::to_string(name)?,
        serde_json::to_string(table)?
    );
    let mut reader = Pipeline::from_yaml_str(&yaml).map_err(|d| anyhow!("{}", d.message))?;
    let conn = pipeline.connections.get(name).with_context(|| format!("no connection `{name}`"))?;
    reader.connections.insert(name.to_string(), conn.clone());
    let destinations = Destinations::default();
    let connectors =
        TestConnectors { stand_ins: HashMap::new(), destinations: destinations.clone(), real: BTreeSet::new() };
    let tmp = tempfile::tempdir()?;
    let engine = Engine::new(Arc::new(connectors), Arc::new(StateStore::in_memory()?));
    engine.run(&reader, &options(tmp.path().to_path_buf(), tmp.path()), RunMetrics::default()).await?;
    let table = destinations.lock().unwrap_or_else(|p| p.into_inner()).remove("out");
    table.context("nothing was read")
}

/// How a test runs a pipeline: relative paths from `base_dir`, scratch files and load packages in `tmp`.
fn options(base_dir: PathBuf, tmp: &Path) -> RunOptions {
    RunOptions {
        trigger: "test".into(),
        variables: BTreeMap::new(),
        memory_limit: None,
        base_dir,
        scratch_root: tmp.join("scratch"),
        dry_run: false,
        packages: tmp.join("packages"),
        cancel: CancellationToken::new(),
        record_state: true,
        payload: None,
        run_id: None,
        engine: None,
    }
}

/// What one run left, to compare with what it should have.
struct Seen<'a> {
    prepared: &'a Prepared,
    store: &'a StateStore,
    run_id: &'a str,
    destinations: &'a Destinations,
    update: bool,
}

impl Seen<'_> {
    async fn compare(
        &self,
        result: &Result<weir_engine::RunReport, EngineError>,
        expect: &Expect,
        updates: &mut Vec<Update>,
    ) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        match (result, &expect.error) {
            (Ok(_), Some(want)) => out.push(format!("the run succeeded, but it should have failed with `{want}`")),
            (Err(e), None) => out.push(format!("the run failed: {e}")),
            (Err(e), Some(want)) if !e.to_string().contains(want.as_str()) => {
                out.push(format!("the run failed with `{e}`, not with an error containing `{want}`"))
            }
            _ => {}
        }
        for (id, want) in expect.steps.iter() {
            let table = self.rows_of(id).await?;
            let (actual, columns) = match &table {
                Some(t) => (rows::to_json(&t.batches)?, t.schema.fields().iter().map(|f| f.name().clone()).collect()),
                None => (Vec::new(), Vec::new()),
            };
            if let Some(expected) = &want.rows
                && let Some(diff) = rows::differences(&expected.value, &actual, &columns, want.ordered)
            {
                if self.update {
                    let named = rows::columns_of(&expected.value);
                    let shown = if named.is_empty() { &columns } else { &named };
                    let line = expected.referenced.line();
                    updates.push(Update { line, rows: actual.iter().map(|r| rows::shown(r, shown)).collect() });
                } else {
                    out.push(format!("step `{id}`: {diff}"));
                }
            }
            if let Some(count) = want.count
                && count != actual.len() as u64
            {
                out.push(format!("step `{id}`: expected {count} rows, got {}", actual.len()));
            }
            for query in &want.sql {
                if let Some(problem) = assert_sql(id, table.as_ref(), query).await {
                    out.push(format!("step `{id}`: {problem}"));
                }
            }
        }
        if let Some(expected) = &expect.dead_letters {
            out.extend(self.compare_dead_letters(expected)?);
        }
        out.extend(self.compare_state(&expect.state)?);
        if !expect.checks.is_empty() {
            let records = self.store.checks(self.run_id)?;
            for (name, want) in &expect.checks {
                match records.iter().find(|r| r.name == *name) {
                    None => out.push(format!("check `{name}` did not run")),
                    Some(r) if r.passed != (*want == CheckOutcome::Passed) => out.push(format!(
                        "check `{name}` should have {}: {}",
                        if r.passed { "failed" } else { "passed" },
                        r.message
                    )),
                    Some(_) => {}
                }
            }
        }
        Ok(out)
    }

    /// A load step's destination after the run, or another step's output in it.
    async fn rows_of(&self, id: &str) -> anyhow::Result<Option<Table>> {
        let pipeline = &self.prepared.pipeline;
        let step = pipeline.step(id).with_context(|| format!("no step `{id}`"))?;
        let real = connection_of(&step.kind).is_some_and(|c| self.prepared.real.contains(c));
        if let (true, StepKind::WriteDb(db)) = (real, &step.kind) {
            return Ok(read_real(pipeline, &db.connection.value, &db.table.value).await.ok());
        }
        let key = match step.kind.category() {
            Category::Load | Category::Action => id.to_string(),
            _ => observer(id),
        };
        Ok(self.destinations.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned())
    }

    fn compare_dead_letters(&self, expected: &[weir_spec::DeadLetterExpect]) -> anyhow::Result<Vec<String>> {
        let filter = DeadLetterFilter { run_id: Some(self.run_id.to_string()), step: None, id: None };
        let letters = self.store.dead_letters_matching(self.prepared.pipeline.name(), &filter)?;
        let mut used = vec![false; letters.len()];
        let mut out = Vec::new();
        for want in expected {
            let found = (0..letters.len()).find(|&i| {
                let l = &letters[i];
                !used[i]
                    && l.step == want.step
                    && want.reason.as_deref().is_none_or(|r| l.error.contains(r))
                    && want.origin.as_deref().is_none_or(|o| l.origin.as_deref().is_some_and(|at| at.contains(o)))
                    && want.record.as_ref().and_then(|r| r.as_object()).is_none_or(|r| {
                        l.record
                            .as_object()
                            .is_some_and(|actual| rows::matches(r.iter().map(|(k, v)| (k.as_str(), v)), actual))
                    })
            });
            match found {
                Some(i) => used[i] = true,
                None => out.push(format!(
                    "no dead letter of step `{}`{}{}{}",
                    want.step,
                    want.reason.as_ref().map(|r| format!(" with a reason containing `{r}`")).unwrap_or_default(),
                    want.origin.as_ref().map(|o| format!(" from `{o}`")).unwrap_or_default(),
                    want.record.as_ref().map(|r| format!(" for record {r}")).unwrap_or_default()
                )),
            }
        }
        for (letter, _) in letters.iter().zip(&used).filter(|(_, u)| !**u) {
            out.push(format!(
                "an unexpected dead letter of step `{}`{}: {} (record {})",
                letter.step,
                letter.origin.as_ref().map(|o| format!(" from {o}")).unwrap_or_default(),
                letter.error,
                weir_engine::truncate(&letter.record.to_string(), 200)
            ));
        }
        Ok(out)
    }

    fn compare_state(&self, expected: &BTreeMap<String, serde_json::Value>) -> anyhow::Result<Vec<String>> {
        let pipeline = &self.prepared.pipeline;
        let stored = self.store.state(pipeline.name())?;
        let mut out = Vec::new();
        for (name, want) in expected {
            let got = match (stored.get(name), pipeline.state.get(name)) {
                (Some(value), _) => typed_json(value),
                (None, Some(decl)) => decl.value.default.value.clone(),
                (None, None) => {
                    out.push(format!("state `{name}`: the pipeline declares no such state"));
                    continue;
                }
            };
            if !rows::same(want, &got) {
                out.push(format!("state `{name}` is {got}, not {want}"));
            }
        }
        Ok(out)
    }
}

/// Runs `query` over the step's rows (its id is the table); `Some` says why it does not hold.
async fn assert_sql(id: &str, table: Option<&Table>, query: &str) -> Option<String> {
    let ctx = SessionContext::new();
    let empty = Table { schema: Arc::new(datafusion::arrow::datatypes::Schema::empty()), batches: Vec::new() };
    let table = table.unwrap_or(&empty);
    let registered = MemTable::try_new(table.schema.clone(), vec![table.batches.clone()])
        .map_err(|e| e.to_string())
        .and_then(|t| ctx.register_table(id, Arc::new(t)).map_err(|e| e.to_string()));
    if let Err(e) = registered {
        return Some(format!("cannot query: {e}"));
    }
    let answer = match ctx.sql(query).await {
        Ok(df) => df.collect().await,
        Err(e) => Err(e),
    };
    let batches = match answer {
        Ok(b) => b,
        Err(e) => return Some(format!("`{query}` failed: {e}")),
    };
    let holds = !batches.iter().all(|b| b.num_rows() == 0)
        && batches.iter().filter(|b| b.num_rows() > 0).all(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                .is_some_and(|c| c.null_count() == 0 && c.true_count() == c.len())
        });
    (!holds).then(|| format!("`{query}` does not hold: it gave {}", rows::preview(&batches)))
}

fn typed_json(value: &TypedValue) -> serde_json::Value {
    match value {
        TypedValue::Integer(i) => (*i).into(),
        TypedValue::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        TypedValue::Boolean(b) => (*b).into(),
        TypedValue::String(s) | TypedValue::Date(s) | TypedValue::Timestamp(s) => s.clone().into(),
    }
}

/// A variable's value as `--var` would give it.
fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
