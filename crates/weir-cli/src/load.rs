//! Reading a pipeline file and opening its state store, shared by every command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use weir_engine::{DeadLetters, Engine, StateStore};
use weir_spec::Pipeline;

use crate::Global;

/// A pipeline file, parsed.
pub struct Loaded {
    pub path: PathBuf,
    pub pipeline: Pipeline,
}

impl Loaded {
    pub fn dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into())
    }

    pub fn state_dir(&self, global: &Global) -> PathBuf {
        global.state_dir.clone().unwrap_or_else(|| self.dir().join(".weir"))
    }

    pub fn store(&self, global: &Global) -> anyhow::Result<Arc<StateStore>> {
        let location = global.state_location(&self.state_dir(global));
        let store =
            Arc::new(StateStore::at(&location).with_context(|| format!("cannot open the state store {location}"))?);
        global.run_logs.attach(store.clone());
        Ok(store)
    }

    /// Where the pipeline keeps its dead letters (`settings.dead_letters`, else its state store).
    pub fn dead_letters(&self, global: &Global) -> anyhow::Result<Arc<dyn DeadLetters>> {
        let engine = Engine::new(Arc::new(weir_connectors::Builtin), self.store(global)?);
        Ok(engine.dead_letters(&self.pipeline, &self.dir())?)
    }
}

/// Parses a pipeline file; `Err` carries every diagnostic rendered as `file:line:col: message`.
pub fn parse(path: &Path) -> Result<Loaded, Vec<String>> {
    Ok(Loaded {
        path: path.to_path_buf(),
        pipeline: Pipeline::from_file(path, &weir_connectors::registry::environment())?,
    })
}

/// Like [`parse`], for commands that cannot go on with a broken file.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    match parse(path) {
        Ok(loaded) => Ok(loaded),
        Err(messages) => {
            for m in &messages {
                eprintln!("{m}");
            }
            bail!("{} has {} mistake(s); fix them and run again", path.display(), messages.len())
        }
    }
}

/// Splits `name=value`.
pub fn parse_var(text: &str) -> anyhow::Result<(String, String)> {
    let (name, value) = text.split_once('=').with_context(|| format!("`{text}`: write --var name=value"))?;
    Ok((name.trim().to_string(), value.to_string()))
}
