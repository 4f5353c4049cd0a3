//! `weir runs`, `weir state`, `weir dlq`: reading (and for state, editing) the embedded store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weir_engine::DeadLetterFilter;
use weir_spec::TypedValue;

use crate::Global;
use crate::load::load;

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Show one run's steps.
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With `--run`: also the run's log lines.
    #[arg(long, requires = "run")]
    pub logs: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the state values (stored, or the declared default).
    Get {
        pipeline: PathBuf,
        /// One value only.
        name: Option<String>,
    },
    /// Set a value by hand, e.g. to re-read from an earlier point: `weir state set p.yaml last_sync 2024-01-01T00:00:00Z`.
    Set { pipeline: PathBuf, name: String, value: String },
    /// Forget stored values so the declared defaults apply again (a full re-sync).
    Reset {
        pipeline: PathBuf,
        /// One value only; all when absent.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: id, step, reason, origin.
    List {
        pipeline: PathBuf,
        /// Only those of one run.
        #[arg(long)]
        run: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter whole, with its original record.
    Show { pipeline: PathBuf, id: i64 },
    /// Send dead letters back through the step that set them aside, after a fix to the pipeline or the
    /// destination: those of one run, one step or one id, or all. The replay is a run of its own (trigger
    /// `replay`) over the steps downstream of that step; state does not move. Dead letters that go through are
    /// removed; those that fail again stay, with one more retry and the new reason.
    Replay {
        pipeline: PathBuf,
        #[command(flatten)]
        which: Selection,
    },
    /// Delete dead letters (after the records were fixed at the source, say): those of one run, one step or one
    /// id, or every one with `--all`.
    Purge {
        pipeline: PathBuf,
        #[command(flatten)]
        which: Selection,
        /// Delete every dead letter of the pipeline.
        #[arg(long, conflicts_with_all = ["run", "step", "id"])]
        all: bool,
    },
}

/// Which dead letters: those of one run, one step or one id; every one of the pipeline with none given.
#[derive(Debug, Args)]
pub struct Selection {
    /// Only those of this run.
    #[arg(long)]
    run: Option<String>,
    /// Only those this step set aside.
    #[arg(long)]
    step: Option<String>,
    /// Only this one.
    #[arg(long)]
    id: Option<i64>,
}

impl Selection {
    fn filter(self) -> DeadLetterFilter {
        DeadLetterFilter { run_id: self.run, step: self.step, id: self.id }
    }
}

pub fn runs(global: &Global, args: RunsArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.pipeline)?;
    let store = loaded.store(global)?;
    if let Some(run) = &args.run {
        let steps = store.step_metrics(run)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&steps)?);
        } else {
            println!(
                "{:<20} {:<14} {:>12} {:>12} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10}",
                "STEP", "KIND", "ROWS IN", "ROWS OUT", "INVALID", "MS", "RETRIES", "INSERTED", "UPDATED", "DELETED"
            );
            // Blank where the step is no load or its database does not tell.
            let shown = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
            for s in steps {
                println!(
                    "{:<20} {:<14} {:>12} {:>12} {:>9} {:>10} {:>8} {:>10} {:>10} {:>10}",
                    s.step,
                    s.kind,
                    s.rows_in,
                    s.rows_out,
                    s.rows_invalid,
                    s.duration_ms,
                    s.retries,
                    shown(s.inserted),
                    shown(s.updated),
                    shown(s.deleted)
                );
            }
            for c in store.checks(run)? {
                let outcome =
                    if c.passed { "passed".to_string() } else { format!("FAILED ({}): {}", c.severity, c.message) };
                println!("check {} on {}: {outcome}", c.name, c.step);
            }
            if args.logs {
                for line in store.run_logs(run)? {
                    println!("{} {:<5} {}", line.at, line.level, line.message);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runs = store.runs(Some(loaded.pipeline.name()), args.limit)?;
    if args.json {
        let metrics = store.pipeline_metrics(loaded.pipeline.name())?;
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "runs": runs, "metrics": metrics }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<38} {:<8} {:<25} {:<10} ERROR", "RUN", "STATUS", "STARTED", "STAGE");
    for r in runs {
        let error = r.error.unwrap_or_default();
        let error = error.lines().next().unwrap_or_default();
        println!("{:<38} {:<8} {:<25} {:<10} {}", r.run_id, r.status, r.started_at, r.stage.unwrap_or_default(), error);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn state(global: &Global, cmd: StateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StateCommand::Get { pipeline, name } => {
            let loaded = load(&pipeline)?;
            let stored = loaded.store(global)?.state(loaded.pipeline.name())?;
            for (key, decl) in &loaded.pipeline.state {
                if name.as_ref().is_some_and(|n| n != key) {
                    continue;
                }
                match stored.get(key) {
                    Some(v) => println!("{key} = {v}"),
                    None => println!("{key} = {} (default)", decl.value.default.value),
                }
            }
        }
        StateCommand::Set { pipeline, name, value } => {
            let loaded = load(&pipeline)?;
            let decl = loaded.pipeline.state.get(&name).with_context(|| {
                format!(
                    "`{name}` is not a state value of this pipeline; declared: {:?}",
                    loaded.pipeline.state.keys().collect::<Vec<_>>()
                )
            })?;
            let value = TypedValue::parse(decl.value.ty, &value).map_err(anyhow::Error::msg)?;
            loaded.store(global)?.set_state(loaded.pipeline.name(), &name, &value)?;
            println!("{name} = {value}");
        }
        StateCommand::Reset { pipeline, name } => {
            let loaded = load(&pipeline)?;
            if let Some(n) = &name
                && !loaded.pipeline.state.contains_key(n)
            {
                bail!("`{n}` is not a state value of this pipeline");
            }
            let removed = loaded.store(global)?.reset_state(loaded.pipeline.name(), name.as_deref())?;
            println!("reset {removed} value(s); defaults apply on the next run");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq(global: &Global, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::Replay { pipeline, which } => {
            return crate::commands::run::replay(global, &pipeline, which.filter()).await;
        }
        DlqCommand::List { pipeline, run, limit, json } => {
            let loaded = load(&pipeline)?;
            let filter = DeadLetterFilter { run_id: run, ..DeadLetterFilter::default() };
            let mut letters = loaded
                .dead_letters(global)?
                .matching(loaded.pipeline.name(), &filter)
                .map_err(anyhow::Error::from_boxed)?;
            letters.truncate(limit);
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!("{:<6} {:<16} {:<30} ERROR", "ID", "STEP", "ORIGIN");
                for l in letters {
                    println!("{:<6} {:<16} {:<30} {}", l.id, l.step, l.origin.unwrap_or_default(), l.error);
                }
            }
        }
        DlqCommand::Purge { pipeline, which, all } => {
            let filter = which.filter();
            if !all && filter.run_id.is_none() && filter.step.is_none() && filter.id.is_none() {
                bail!("say which dead letters to delete: --run ID, --step STEP, --id N, or --all");
            }
            let loaded = load(&pipeline)?;
            let purged = weir_engine::purge(&*loaded.dead_letters(global)?, loaded.pipeline.name(), &filter)
                .map_err(anyhow::Error::from_boxed)?;
            println!("purged {purged} dead letters");
        }
        DlqCommand::Show { pipeline, id } => {
            let loaded = load(&pipeline)?;
            let filter = DeadLetterFilter { id: Some(id), ..DeadLetterFilter::default() };
            let found = loaded
                .dead_letters(global)?
                .matching(loaded.pipeline.name(), &filter)
                .map_err(anyhow::Error::from_boxed)?;
            let letter = found.into_iter().next().with_context(|| format!("no dead letter {id}"))?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
