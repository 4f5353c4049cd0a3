use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use weir_engine::{Engine, EngineError, RunOptions, StateStore};

use crate::Global;
use crate::load::{Loaded, load, parse, parse_var};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files to check.
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Set a variable, as for `weir run`: `--var name=value` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Plan for a cluster, as `weir run --engine` runs: each step is marked `[cluster]` or `[here: why]`.
    #[arg(long, value_name = "ballista://HOST:PORT", env = "WEIR_ENGINE")]
    pub engine: Option<weir_spec::ClusterEngine>,
}

/// Plans a pipeline against a throwaway store, so validating never touches a pipeline's real history.
async fn plan(
    loaded: &Loaded,
    variables: BTreeMap<String, String>,
    engine_at: Option<weir_spec::ClusterEngine>,
) -> Result<weir_engine::Planned, EngineError> {
    let store = Arc::new(StateStore::in_memory()?);
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), store);
    let options = RunOptions {
        trigger: "validate".into(),
        variables,
        memory_limit: None,
        base_dir: loaded.dir(),
        scratch_root: std::env::temp_dir(),
        dry_run: false,
        packages: std::env::temp_dir(),
        cancel: Default::default(),
        record_state: false,
        payload: None,
        run_id: None,
        engine: engine_at,
    };
    engine.plan(&loaded.pipeline, &options).await
}

pub async fn validate(_global: &Global, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for path in &args.pipelines {
        let shown = path.display().to_string();
        let messages = match parse(path) {
            Err(messages) => messages,
            Ok(loaded) => match plan(&loaded, BTreeMap::new(), None).await {
                Ok(_) => Vec::new(),
                Err(EngineError::Spec { diagnostics, .. }) => {
                    diagnostics.iter().map(|d| d.display_in(&shown).to_string()).collect()
                }
                Err(EngineError::Plan { message, pos, step, .. }) => {
                    let d = weir_spec::Diagnostic::new(pos, format!("step `{step}`: {message}"));
                    vec![d.display_in(&shown).to_string()]
                }
                Err(other) => vec![format!("{shown}: {other}")],
            },
        };
        if messages.is_empty() {
            println!("{shown}: ok");
        } else {
            failed += 1;
            for m in messages {
                println!("{m}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub async fn explain(_global: &Global, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.pipeline)?;
    let variables = args.vars.iter().map(|v| parse_var(v)).collect::<anyhow::Result<_>>()?;
    let planned = plan(&loaded, variables, args.engine).await?;
    println!("{}", planned.explain().await?);
    Ok(ExitCode::SUCCESS)
}
