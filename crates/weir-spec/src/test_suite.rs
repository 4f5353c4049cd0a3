//! Test cases of a pipeline, for `weir test`: `NAME.test.yaml` beside `NAME.yaml`.
//!
//! ```yaml
//! cases:
//!   bad emails are set aside:
//!     given:
//!       customers: { rows: [{ id: 1, email: a@example.com }, { id: 2, email: nope }] }
//!     expect:
//!       steps:
//!         load: { rows: [{ id: 1, email: a@example.com }] }
//!       dead_letters: [{ step: checked, reason: email_format }]
//! ```
//!
//! A case replaces the data its extract steps would read (`given`), runs the pipeline once or several times
//! (`runs`) against a fresh state store, and compares what its steps produced, the dead letters, the state and the
//! checks with what it expects. Loads write to captured tables unless the case gives a real connection.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostic::Diagnostic;
use crate::step::OrderedMap;

/// The test cases of one pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSuite {
    /// The pipeline file under test, relative to this file [default: this file's name without `.test`].
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Environment variables the pipeline's connections read (`${NAME}`), for every case: tests need no real
    /// secrets. The process environment fills in the rest.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The cases by name. Each runs on its own (in parallel with the others) against a fresh state store.
    pub cases: OrderedMap<TestCase>,
}

/// One case: a single run (`given`, `variables`, `expect`), or a sequence of `runs` that each see what the runs
/// before them left behind (state, destinations, dead letters).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows.
    #[serde(default)]
    pub description: Option<String>,
    /// State values the first run starts from, by name; the rest start from their declared defaults.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub state: BTreeMap<String, serde_json::Value>,
    /// Connections to use for real instead of capturing what loads write to them: the `url` (and `options`) to
    /// use. `{{ test.dir }}` in a value is the case's own temporary directory. After a run that fails, every
    /// `write_db` table on such a connection must be as it was before the run.
    #[serde(default)]
    pub connections: BTreeMap<String, RealConnection>,
    /// For a single run: variables, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// For a single run: the data of extract steps, by step id.
    #[serde(default)]
    pub given: BTreeMap<String, Given>,
    /// For a single run: what the run must produce.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Several runs in order, instead of `given`, `variables` and `expect`.
    #[serde(default)]
    pub runs: Vec<TestRun>,
}

/// A connection used for real in a case.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RealConnection {
    pub url: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// One run of a case.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRun {
    /// Variables, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// The data of extract steps, by step id. An extract step without data here reads what it would really read.
    #[serde(default)]
    pub given: BTreeMap<String, Given>,
    /// What the run must produce.
    #[serde(default)]
    pub expect: Expect,
}

/// What an extract step reads in a case. Give one of `rows`, `file` and `responses`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Given {
    /// The step's output rows, columns in the order the rows name them. Types are inferred from the values; text
    /// that is all dates or all timestamps becomes a date or timestamp column.
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Map<String, serde_json::Value>>>")]
    pub rows: Option<Spanned<Vec<OrderedMap<serde_json::Value>>>>,
    /// A fixture file, relative to the test file: a file step reads it with its own options instead of its
    /// `path`; any other step's output is the file's rows (`.csv`, `.json`/`.ndjson` or `.parquet`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// For `read_api` and `enrich_api`: the HTTP responses a server on 127.0.0.1 gives, in the order the step asks.
    /// The step runs as it really would (paging, retries, authentication) against that server.
    #[serde(default)]
    pub responses: Option<Vec<MockResponse>>,
}

/// One HTTP response of a mocked API.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockResponse {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub body: Option<serde_json::Value>,
    /// The request must have this path (`/customers`), or the case fails.
    #[serde(default)]
    pub path: Option<String>,
    /// The request must have these query parameters (others may be there too), or the case fails.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

fn ok_status() -> u16 {
    200
}

/// What a run must produce. Everything left out is not compared.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The rows of steps, by step id. A load step's rows are its destination's after the run (a `write_db` table
    /// keeps what earlier runs of the case loaded); any other step's are its output in this run.
    #[serde(default)]
    pub steps: OrderedMap<StepExpect>,
    /// Exactly these dead letters were set aside by this run, in any order.
    #[serde(default)]
    pub dead_letters: Option<Vec<DeadLetterExpect>>,
    /// State values after the run, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub state: BTreeMap<String, serde_json::Value>,
    /// Outcomes of checks, by check name.
    #[serde(default)]
    pub checks: BTreeMap<String, CheckOutcome>,
    /// The run must fail with an error containing this text.
    #[serde(default)]
    pub error: Option<String>,
}

/// What one step must have produced.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepExpect {
    /// Exactly these rows, in any order (`ordered: true` for this order). Only the columns the rows name are
    /// compared; a missing value is NULL. `weir test --update` rewrites them from what the run produced.
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Map<String, serde_json::Value>>>")]
    pub rows: Option<Spanned<Vec<OrderedMap<serde_json::Value>>>>,
    #[serde(default)]
    pub ordered: bool,
    /// The number of rows.
    #[serde(default)]
    pub count: Option<u64>,
    /// SQL queries over the step (its id is the table name); every value of each answer's first column must be
    /// true, e.g. `SELECT bool_and(amount > 0) FROM load`.
    #[serde(default)]
    pub sql: Vec<String>,
}

/// A dead letter a run must have set aside.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterExpect {
    /// The step that set it aside.
    pub step: String,
    /// Text its reason contains.
    #[serde(default)]
    pub reason: Option<String>,
    /// Text where it came from contains, e.g. `orders.csv:7` (a file step's file and line).
    #[serde(default)]
    pub origin: Option<String>,
    /// Values its record has (other fields may be there too).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub record: Option<serde_json::Value>,
}

/// How a check must have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Passed,
    Failed,
}

/// Whether `path` names a test file (`NAME.test.yaml`, `NAME.test.yml`) rather than a pipeline.
pub fn is_test_file(path: &std::path::Path) -> bool {
    path.file_stem().is_some_and(|stem| stem.to_string_lossy().ends_with(".test"))
}

impl TestSuite {
    /// The JSON Schema of test files, for editors (`weir schema --tests`).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(TestSuite)).expect("a schema is JSON")
    }

    /// Parses a test file; `Err` is the first mistake as `file:line:col: message`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        let suite: Self =
            serde_saphyr::from_str(&text).map_err(|e| Diagnostic::from(e).display_in(&shown).to_string())?;
        for (name, case) in suite.cases.0.iter() {
            let single = case.expect.is_some() || !case.given.is_empty() || !case.variables.is_empty();
            if single && !case.runs.is_empty() {
                let d = Diagnostic::at(
                    name,
                    format!(
                        "case `{}` has `runs` and also `given`, `variables` or `expect`; put them in its runs",
                        name.value
                    ),
                );
                return Err(d.display_in(&shown).to_string());
            }
            for run in case.runs.iter().map(|r| &r.given).chain([&case.given]) {
                for (step, given) in run {
                    let set = [given.rows.is_some(), given.file.is_some(), given.responses.is_some()];
                    if set.iter().filter(|s| **s).count() != 1 {
                        let d = Diagnostic::at(
                            name,
                            format!(
                                "case `{}`: `given.{step}` needs exactly one of `rows`, `file` and `responses`",
                                name.value
                            ),
                        );
                        return Err(d.display_in(&shown).to_string());
                    }
                }
            }
        }
        Ok(suite)
    }
}

impl TestCase {
    /// The case's runs: its `runs`, or the one run its own `given`, `variables` and `expect` make.
    pub fn into_runs(self) -> Vec<TestRun> {
        if self.runs.is_empty() {
            vec![TestRun { variables: self.variables, given: self.given, expect: self.expect.unwrap_or_default() }]
        } else {
            self.runs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as `p.test.yaml` in a directory of its own (tests run in parallel).
    fn parse(text: &str) -> Result<TestSuite, String> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weir-spec-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.test.yaml");
        std::fs::write(&path, text).unwrap();
        let parsed = TestSuite::from_file(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        parsed
    }

    #[test]
    fn a_single_run_case_and_a_sequence_of_runs() {
        let suite = parse(
            "cases:\n  one:\n    given: { a: { rows: [{ x: 1 }] } }\n    expect: { steps: { b: { count: 1 } } }\n  two:\n    runs:\n      - given: { a: { file: a.csv } }\n      - expect: { error: boom }\n",
        )
        .unwrap();
        let cases: Vec<_> = suite.cases.0.into_iter().map(|(n, c)| (n.value, c.into_runs())).collect();
        assert_eq!(cases[0].0, "one");
        assert_eq!(cases[0].1.len(), 1);
        assert_eq!(cases[0].1[0].expect.steps.get("b").unwrap().count, Some(1));
        assert_eq!(cases[1].1.len(), 2);
        assert_eq!(cases[1].1[1].expect.error.as_deref(), Some("boom"));
    }

    #[test]
    fn mistakes_point_at_the_case() {
        let err = parse("cases:\n  c:\n    given: { a: { rows: [], file: x.csv } }\n").unwrap_err();
        assert!(err.contains("p.test.yaml:2:3: case `c`: `given.a` needs exactly one of"), "{err}");
        let err = parse("cases:\n  c:\n    expect: {}\n    runs: [{}]\n").unwrap_err();
        assert!(err.contains("has `runs` and also"), "{err}");
        let err = parse("cases:\n  c:\n    expect: { stepz: {} }\n").unwrap_err();
        assert!(err.contains("p.test.yaml:3:"), "{err}");
    }
}
