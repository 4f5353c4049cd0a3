//! `weir backfill`: one run per value of a date or integer variable over a range, oldest first. Backfill runs
//! record no state, so a cursor or `last_run` stays where the regular runs left it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Args;
use weir_connectors::{Start, run_and_alert};
use weir_engine::{Engine, RunMetrics};
use weir_spec::ValueType;

use crate::Global;
use crate::commands::run::options;
use crate::load::{load, parse_var};

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The variable that takes each value: a `date` (one run per day) or an `integer` (one run per number).
    #[arg(long)]
    pub var: String,
    /// First value, included.
    #[arg(long)]
    pub from: String,
    /// Last value, included.
    #[arg(long)]
    pub to: String,
    /// Other variables, the same for every run: `--set name=value` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub others: Vec<String>,
    /// Go on with the next value after a failed run (the failures are listed at the end).
    #[arg(long)]
    pub keep_going: bool,
}

pub async fn backfill(global: &Global, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.pipeline)?;
    let declared = loaded.pipeline.variables.get(&args.var).with_context(|| {
        format!(
            "`{}` is not a variable of this pipeline; declared: {:?}",
            args.var,
            loaded.pipeline.variables.keys().collect::<Vec<_>>()
        )
    })?;
    let values = range(declared.value.ty, &args.from, &args.to)?;
    let others: BTreeMap<String, String> = args.others.iter().map(|v| parse_var(v)).collect::<anyhow::Result<_>>()?;
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), loaded.store(global)?);
    let base = options(global, &loaded);
    let mut failed = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let mut variables = others.clone();
        variables.insert(args.var.clone(), value.clone());
        let run_options =
            weir_engine::RunOptions { trigger: "backfill".into(), variables, record_state: false, ..base.clone() };
        eprintln!("backfill {}/{}: {}={value}", i + 1, values.len(), args.var);
        match run_and_alert(&engine, &loaded.pipeline, &run_options, RunMetrics::default(), Start::New).await.0 {
            Ok(report) => eprintln!("  run {} succeeded in {} ms", report.run_id, report.duration_ms),
            Err(e) if args.keep_going => {
                eprintln!("  failed: {e}");
                failed.push(value.clone());
            }
            Err(e) => bail!("backfill stopped at {}={value} ({} of {} done): {e}", args.var, i, values.len()),
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} backfill runs failed: {}={}", failed.len(), values.len(), args.var, failed.join(", "));
    }
    eprintln!("backfilled {} values of {}", values.len(), args.var);
    Ok(ExitCode::SUCCESS)
}

/// Every value from `from` to `to`, both included.
fn range(ty: ValueType, from: &str, to: &str) -> anyhow::Result<Vec<String>> {
    let values: Vec<String> = match ty {
        ValueType::Date => {
            let parse = |t: &str| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d").with_context(|| format!("`{t}` is not a date (YYYY-MM-DD)"))
            };
            let (first, last) = (parse(from)?, parse(to)?);
            first.iter_days().take_while(|d| *d <= last).map(|d| d.to_string()).collect()
        }
        ValueType::Integer => {
            let parse = |t: &str| t.parse::<i64>().with_context(|| format!("`{t}` is not an integer"));
            (parse(from)?..=parse(to)?).map(|n| n.to_string()).collect()
        }
        other => bail!("backfill walks a date or integer variable; this one is {other:?}"),
    };
    if values.is_empty() {
        bail!("--from {from} is after --to {to}");
    }
    Ok(values)
}
