//! `weir dlq replay`: dead letters sent back through the step that set them aside, once the pipeline or the
//! destination is fixed. The replay is a run of its own (trigger `replay`) over the part of the pipeline downstream
//! of that step, whose input is a table of the dead letters' records; state does not move. A dead letter that
//! passes is removed; one that fails again stays, with its retry count incremented and the new reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use tracing::{Instrument, info, warn};
use weir_spec::{Dag, Pipeline, StepKind};

use crate::dead_letters::settle_replay;
use crate::error::{EngineError, attribute};
use crate::metrics::RunMetrics;
use crate::params::resolve_variables;
use crate::records::records_table;
use crate::run::{Engine, Mode, ReplayInput, RunOptions, step_rows};
use crate::state_store::DeadLetter;

/// What a replay did.
#[derive(Debug)]
pub struct ReplayReport {
    /// The replay's run; none when no dead letter was replayable.
    pub run_id: Option<String>,
    pub replayed: usize,
    /// Dead letters left alone because the run that set them aside failed (see [`Engine::replay`]).
    pub skipped: usize,
    /// Dead letters that went through and were removed.
    pub passed: usize,
    /// Dead letters that failed again and stay, retry count incremented.
    pub failed_again: usize,
    /// Why the replay run failed, if it did: then every dead letter stays.
    pub error: Option<EngineError>,
}

impl Engine {
    /// Replays `letters`, all set aside by `step`. Those of a run that failed are left alone: a failed run
    /// committed nothing (or is resumed, and then succeeds), so the run that reads its input again sets the same
    /// records aside again, and replaying both copies would load them twice.
    pub async fn replay(
        &self,
        pipeline: &Pipeline,
        options: &RunOptions,
        metrics: RunMetrics,
        step: &str,
        letters: &[DeadLetter],
    ) -> Result<ReplayReport, EngineError> {
        let name = pipeline.name().to_string();
        let (letters, skipped) = of_successful_runs(self.store(), letters)?;
        if !skipped.is_empty() {
            warn!(
                pipeline = %name,
                runs = ?skipped,
                "Leaving alone dead letters of `{step}` from runs that failed: running the pipeline reads their records again (`weir dlq purge --run ID` removes them)"
            );
        }
        let skipped = skipped.values().sum();
        if letters.is_empty() {
            return Ok(ReplayReport { run_id: None, replayed: 0, skipped, passed: 0, failed_again: 0, error: None });
        }
        let letters = letters.as_slice();
        let input_err = |message: String| EngineError::Input { pipeline: name.clone(), message };
        let failing = pipeline.step(step).ok_or_else(|| {
            input_err(format!("the dead letters are of step `{step}`, which the pipeline no longer has"))
        })?;
        // Only these steps keep the row they were given; others keep what could not be decoded (a CSV line) or a
        // lookup key, which cannot go back in.
        let input = match &failing.kind {
            StepKind::Validate(_)
            | StepKind::Map(_)
            | StepKind::AiExtract(_)
            | StepKind::WriteApi(_)
            | StepKind::WriteDb(_) => failing.kind.input().expect("each has an input").value.clone(),
            other => {
                return Err(input_err(format!(
                    "dead letters of `{step}` ({}) hold what it could not read, not a row it was given: fix the source \
                     and run the pipeline again, then `weir dlq purge --step {step}`",
                    other.name()
                )));
            }
        };

        // The input's schema, from a plan that reads no data.
        let planned = self.plan(pipeline, options).await?;
        let df = planned.ctx.table(input.as_str()).await.map_err(|e| attribute(&name, &input, e))?;
        let schema: SchemaRef = df.schema().inner().clone();
        let steps = replayed_steps(&planned.dag, step, &input);
        drop(planned);
        let table = Arc::new(records(letters, schema).map_err(input_err)?);

        let run_id = uuid::Uuid::now_v7().to_string();
        let variables = resolve_variables(pipeline, &options.variables).map_err(input_err)?;
        let inputs = self.inputs(pipeline, options, &run_id, chrono::Utc::now(), variables)?;
        let vars_json = serde_json::to_value(&inputs.variables).unwrap_or_default();
        self.store().start_run(&run_id, &name, "replay", &vars_json)?;
        info!(pipeline = %name, run_id = %run_id, "Replaying {} dead letters of `{step}`", letters.len());

        let replay = ReplayInput { input, table, steps };
        let span = tracing::info_span!("run", run_id = %run_id, pipeline = %name);
        let (outcome, rows) = async {
            match self.with(pipeline, options, &inputs).plan_steps(Mode::Run, metrics, Some(&replay)).await {
                Ok(planned) => {
                    (self.with(pipeline, options, &inputs).execute(&planned).await, step_rows(pipeline, &planned))
                }
                Err(err) => (Err(err), Vec::new()),
            }
        }
        .instrument(span)
        .await;
        let _ = std::fs::remove_dir_all(&inputs.scratch_dir);
        // A replay never moves state: the run records none.
        let no_state = BTreeMap::new();
        let failure = outcome.as_ref().err().map(|e| (e.to_string(), e.step().map(str::to_string)));
        let recorded = match &failure {
            None => Ok(&no_state),
            Some((message, stage)) => Err((message.as_str(), stage.as_deref())),
        };
        self.store().finish_run(&run_id, &name, recorded, &rows)?;
        let store = self.dead_letters(pipeline, &options.base_dir)?;
        let failed_again =
            settle_replay(&*store, &name, step, letters, &run_id, outcome.is_ok()).map_err(|e| EngineError::Input {
                pipeline: name.clone(),
                message: format!("cannot settle the replayed dead letters: {e}"),
            })?;
        Ok(ReplayReport {
            run_id: Some(run_id),
            replayed: letters.len(),
            skipped,
            passed: if outcome.is_ok() { letters.len() - failed_again } else { 0 },
            failed_again,
            error: outcome.err(),
        })
    }
}

/// `letters` split into those of runs that succeeded (or that the store no longer knows) and, by failed run, how
/// many of the others there are.
fn of_successful_runs(
    store: &crate::StateStore,
    letters: &[DeadLetter],
) -> Result<(Vec<DeadLetter>, BTreeMap<String, usize>), EngineError> {
    let mut status: BTreeMap<&str, bool> = BTreeMap::new();
    let mut kept = Vec::new();
    let mut skipped = BTreeMap::new();
    for letter in letters {
        let succeeded = match status.get(letter.run_id.as_str()) {
            Some(s) => *s,
            None => {
                let s = store.run(&letter.run_id)?.is_none_or(|r| r.status == "success");
                status.insert(&letter.run_id, s);
                s
            }
        };
        if succeeded {
            kept.push(letter.clone());
        } else {
            *skipped.entry(letter.run_id.clone()).or_insert(0) += 1;
        }
    }
    Ok((kept, skipped))
}

/// The steps a replay of `failing`'s dead letters runs: `failing`, everything downstream of it, and whatever those
/// read besides `failing`'s input (which the dead letters stand in for).
fn replayed_steps(dag: &Dag, failing: &str, input: &str) -> BTreeSet<String> {
    let mut steps = BTreeSet::from([failing.to_string()]);
    // Downstream, in planning order: a step is downstream when it reads one that is.
    for id in &dag.order {
        if dag.inputs[id].iter().any(|i| steps.contains(i)) {
            steps.insert(id.clone());
        }
    }
    // Upstream of those, except through the replaced input.
    let mut pending: Vec<String> = steps.iter().cloned().collect();
    while let Some(id) = pending.pop() {
        for i in &dag.inputs[&id] {
            if (id == failing && i == input) || steps.contains(i) {
                continue;
            }
            steps.insert(i.clone());
            pending.push(i.clone());
        }
    }
    steps
}

/// The dead letters' records as one table of the step input's schema.
fn records(letters: &[DeadLetter], schema: SchemaRef) -> Result<MemTable, String> {
    if let Some(letter) = letters.iter().find(|l| !l.record.is_object()) {
        return Err(format!("dead letter {} holds no record to replay: {}", letter.id, letter.record));
    }
    let rows: Vec<serde_json::Value> = letters.iter().map(|l| l.record.clone()).collect();
    records_table(schema, &rows).map_err(|bad| match bad.position {
        Some(p) => {
            format!("dead letter {}: its record no longer fits the step's input: {}", letters[p - 1].id, bad.reason)
        }
        None => format!("the dead letters no longer fit the step's input: {}", bad.reason),
    })
}
