use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::api::{Duration, Retry};
use crate::check::Environment;
use crate::diagnostic::Diagnostic;
use crate::engine::ClusterEngine;
use crate::step::{OrderedMap, Step, Steps};
use crate::trigger::Trigger;
use crate::value::ValueType;

/// A pipeline file ("board"): who owns it, what it takes, what it remembers between runs, and its steps.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Unique name of the pipeline; names runs, state and dead letters.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the pipeline does and why (source, schedule, business logic).
    #[serde(default)]
    pub description: Option<String>,
    /// Team or person accountable for the pipeline.
    #[serde(default)]
    pub owner: Option<String>,
    /// Who to tell when it breaks (emails, Slack handles).
    #[serde(default)]
    pub contacts: Vec<String>,
    /// Link to further documentation.
    #[serde(default)]
    pub docs: Option<String>,
    /// Typed inputs with defaults; override with `weir run --var name=value`. SQL sees them as `$name`, paths and
    /// messages as `{{ var.name }}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Variable>")]
    pub variables: BTreeMap<String, Spanned<Variable>>,
    /// Values remembered between runs (e.g. `last_sync`), committed only when a run succeeds. SQL sees them as
    /// `$name`, paths and messages as `{{ state.name }}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, StateDecl>")]
    pub state: BTreeMap<String, Spanned<StateDecl>>,
    /// Named connections to external systems; `${ENV_VAR}` in any value is read from the environment and never printed.
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    /// What starts the pipeline under `weir serve`: schedules, other pipelines, webhooks.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// The steps, keyed by id. Each step's output is a table named by its id that later steps read.
    pub steps: Steps,
    /// Data-quality checks by name, each on one step's output, evaluated after every load is prepared and before
    /// any commits: a failed `error` check fails the run and nothing is loaded; a failed `warn` check is logged,
    /// recorded with the run and alerted on (`on: [check]`).
    #[serde(default)]
    pub checks: BTreeMap<String, Check>,
    /// Who hears about a failed run, one that set records aside, or a failed `warn` check.
    #[serde(default)]
    pub alerts: Vec<Alert>,
    /// Engine settings for this pipeline.
    #[serde(default)]
    pub settings: Settings,
}

/// A typed variable.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(rename = "type", default)]
    pub ty: ValueType,
    /// Value used when `--var` does not give one. A variable without a default must be given.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A value persisted between runs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateDecl {
    #[serde(rename = "type", default)]
    pub ty: ValueType,
    /// Value before the first successful run.
    #[schemars(with = "serde_json::Value")]
    pub default: Spanned<serde_json::Value>,
    /// How a successful run sets the new value.
    #[serde(default)]
    pub update: Option<StateUpdate>,
    #[serde(default)]
    pub description: Option<String>,
}

/// How a successful run computes the next value of a state entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StateUpdate {
    /// The time the run started ("update last_sync to now()"), so rows changed during the run are
    /// picked up next time.
    RunStartedAt,
    /// The largest value of `step.column` that flowed through the run (an incremental cursor). Unchanged when no
    /// rows flowed.
    Max(#[schemars(with = "String")] Spanned<String>),
}

/// A connection to an external system.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Which system: postgres, mysql, sqlite, s3, ...
    #[schemars(with = "String")]
    pub kind: Spanned<String>,
    /// Connection URL; may hold `${SECRET}` references.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Further options for the connector (`weir list` and the schema name each kind's); values may hold
    /// `${SECRET}` references.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub options: OrderedMap<Spanned<String>>,
}

/// One alert: when, and where to. Exactly one of `slack`, `webhook` and `email`; their URLs may hold `${SECRET}`
/// references.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// The events that send it.
    #[serde(default = "default_alert_on")]
    pub on: Vec<AlertOn>,
    /// For `dead_letters`: alert when a run set aside more records than this.
    #[serde(default)]
    pub dead_letters_above: u64,
    /// A Slack incoming-webhook URL: the message names the pipeline, the error, the failed step and the records
    /// processed.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub slack: Option<Spanned<String>>,
    /// A URL that receives the run's outcome as a JSON object.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub webhook: Option<Spanned<String>>,
    /// An email over SMTP.
    #[serde(default)]
    pub email: Option<EmailAlert>,
}

/// An alert sent as an email.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailAlert {
    /// The SMTP server: `smtp://user:${SMTP_PASSWORD}@mail.example.com:587?tls=required` (STARTTLS),
    /// `smtps://…:465` (TLS), or `smtp://127.0.0.1:25` (plain, for a local relay).
    #[schemars(with = "String")]
    pub smtp: Spanned<String>,
    pub from: String,
    pub to: Vec<String>,
}

/// An event an alert can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOn {
    /// The run failed.
    Failure,
    /// The run set aside more than `dead_letters_above` records (skipped or dead-lettered).
    DeadLetters,
    /// A data-quality check of severity `warn` failed (a failed `error` check fails the run: `failure`).
    Check,
}

/// A data-quality check on one step's output. Give one or more of `min_rows`, `max_rows`, `unique`, `not_null`
/// and `condition`; the check fails when any of them does.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// The step whose output is checked.
    #[schemars(with = "String")]
    pub step: Spanned<String>,
    /// Fewest rows the step may produce.
    #[serde(default)]
    pub min_rows: Option<u64>,
    /// Most rows the step may produce.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Columns whose values, together, appear at most once.
    #[serde(default)]
    pub unique: Vec<String>,
    /// Columns that hold no NULL.
    #[serde(default)]
    pub not_null: Vec<String>,
    /// A SQL condition every row meets, e.g. `amount BETWEEN 0 AND 10000` (`$name` binds variables and state; a
    /// NULL result passes, as in a CHECK constraint).
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub severity: Severity,
}

/// What a failed check does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The run fails and loads nothing.
    #[default]
    Error,
    /// The run goes on; the failure is logged, recorded and alerted on.
    Warn,
}

fn default_alert_on() -> Vec<AlertOn> {
    vec![AlertOn::Failure]
}

/// Engine settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Rows per Arrow batch flowing between steps.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Cap on the memory of joins, sorts and aggregates (e.g. `512MB`); above it they spill to disk. `--memory-limit`
    /// overrides it.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// The retry policy of every HTTP step that sets none of its own, and of every batch a `write_db` commits.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Rows per committed batch. With it, a run first stages each load's input on disk (its load package), then
    /// `write_db` steps load it in batches of this many rows, each committed with a checkpoint in the same
    /// transaction, and other loads load it whole. A run that dies, times out or is cancelled goes on from its
    /// last checkpoint with `weir run --resume`. Without it, every load commits once, when the run succeeds.
    #[serde(default)]
    pub commit_every: Option<u64>,
    /// Runs of this pipeline `weir serve` lets run at once; a trigger that finds that many running is skipped.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Where dead letters are kept instead of the embedded store: NDJSON files, or a table of a database connection.
    #[serde(default)]
    pub dead_letters: Option<DeadLetterTarget>,
    /// The longest a run may take, e.g. `30m`. Past it the run is cancelled (an open batch rolls back) and marked
    /// failed with the step it was in.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// A cluster to run the pipeline's extract and transform queries on, `ballista://host:port` (a scheduler
    /// started with `weir scheduler`); `weir run --engine` overrides it. Loads, and steps the cluster cannot run,
    /// stay on the machine that runs the pipeline. Without it, everything runs on that machine.
    #[serde(default)]
    pub engine: Option<ClusterEngine>,
}

fn default_batch_size() -> usize {
    8192
}

fn default_concurrency() -> usize {
    1
}

/// A dead-letter store other than the embedded one. Give `path` or `connection`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterTarget {
    /// A directory of NDJSON files, one per pipeline (`<path>/<pipeline>.ndjson`), relative to the pipeline file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// A PostgreSQL, MySQL/MariaDB or SQLite connection whose `table` holds them (created when missing).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connection: Option<Spanned<String>>,
    #[serde(default = "default_dead_letter_table")]
    pub table: String,
}

fn default_dead_letter_table() -> String {
    "weir_dead_letters".into()
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            memory_limit: None,
            retry: None,
            commit_every: None,
            concurrency: default_concurrency(),
            dead_letters: None,
            timeout: None,
            engine: None,
        }
    }
}

impl Pipeline {
    /// Parses a pipeline from YAML text. The error points at the line and column of the first mistake the YAML
    /// decoder met; [`crate::check`] then finds every other mistake.
    pub fn from_yaml_str(text: &str) -> Result<Self, Diagnostic> {
        serde_saphyr::from_str(text).map_err(Diagnostic::from)
    }

    /// Reads, parses and checks a pipeline file against `env`; `Err` holds every mistake as
    /// `file:line:col: message`.
    pub fn from_file(path: &std::path::Path, env: &Environment) -> Result<Self, Vec<String>> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: cannot read: {e}")])?;
        let pipeline = Self::from_yaml_str(&text).map_err(|d| vec![d.display_in(&shown).to_string()])?;
        let diagnostics = crate::check(&pipeline, env);
        if !diagnostics.is_empty() {
            return Err(diagnostics.iter().map(|d| d.display_in(&shown).to_string()).collect());
        }
        Ok(pipeline)
    }

    pub fn name(&self) -> &str {
        &self.name.value
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.get(id)
    }
}
