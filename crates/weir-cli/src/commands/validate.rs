use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use weir_engine::{Engine, EngineError, RunOptions, StateStore};

use crate::Global;
use crate::load::{Loaded, load, parse};

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
}

/// Plans a pipeline against a throwaway store, so validating never touches a pipeline's real history.
async fn plan(loaded: &Loaded) -> Result<weir_engine::Planned, EngineError> {
    let store = Arc::new(StateStore::in_memory()?);
    let engine = Engine::new(Arc::new(weir_connectors::Builtin), store);
    let options = RunOptions {
        trigger: "validate".into(),
        variables: Default::default(),
        memory_limit: None,
        base_dir: loaded.dir(),
        scratch_root: std::env::temp_dir(),
    };
    engine.plan(&loaded.pipeline, &options).await
}

pub async fn validate(_global: &Global, args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for path in &args.pipelines {
        let shown = path.display().to_string();
        let messages = match parse(path) {
            Err(messages) => messages,
            Ok(loaded) => match plan(&loaded).await {
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
    let planned = plan(&loaded).await?;
    println!("{}", planned.explain().await?);
    Ok(ExitCode::SUCCESS)
}
