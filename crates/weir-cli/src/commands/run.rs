use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use weir_engine::{Engine, RunMetrics, RunOptions};

use crate::load::{load, parse_var};
use crate::progress::Progress;
use crate::{Global, LogFormat};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Set a variable: `--var name=value` (repeatable). Checked against the variable's type.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Cap on the memory of joins, sorts and aggregates, e.g. `512MB`; above it they spill to disk.
    #[arg(long, env = "WEIR_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Run everything, then roll every load back: the log shows the DDL and statements each load would run, its
    /// row counts and any error a real run would meet. Nothing is committed, no run or dead letter is recorded,
    /// and state does not move.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.pipeline)?;
    let variables: BTreeMap<String, String> = args.vars.iter().map(|v| parse_var(v)).collect::<anyhow::Result<_>>()?;
    let memory_limit = args.memory_limit.as_deref().map(weir_engine::parse_bytes).transpose().map_err(anyhow::Error::msg)?;
    let options = RunOptions {
        trigger: "manual".into(),
        variables,
        memory_limit,
        base_dir: loaded.dir(),
        scratch_root: loaded.state_dir(global).join("tmp"),
        dry_run: args.dry_run,
    };
    let store = loaded.store(global)?;
    let store = if args.dry_run { Arc::new(store.scratch_copy(loaded.pipeline.name())?) } else { store };
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), store);
    let metrics = RunMetrics::default();
    let progress = Progress::start(metrics.clone(), global.log_format == LogFormat::Human && global.quiet == 0);
    let result = engine.run(&loaded.pipeline, &options, metrics).await;
    progress.finish();
    let report = result?;
    if global.quiet == 0 && args.dry_run {
        eprintln!("dry run finished in {} ms: every load was rolled back; nothing was committed", report.duration_ms);
    } else if global.quiet == 0 {
        eprintln!("run {} succeeded in {} ms", report.run_id, report.duration_ms);
    }
    Ok(ExitCode::SUCCESS)
}
