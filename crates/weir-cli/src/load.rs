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

/// The YAML files under a directory, in name order.
#[derive(Debug, Default)]
pub struct YamlFiles {
    pub pipelines: Vec<PathBuf>,
    /// Test files: `NAME.test.yaml` (or `.yml`), for `weir test`.
    pub tests: Vec<PathBuf>,
}

/// The YAML files under `dir`, recursively; hidden directories (`.weir/`), `node_modules` and `target` are skipped.
pub fn yaml_files(dir: &Path) -> anyhow::Result<YamlFiles> {
    let mut found = YamlFiles::default();
    collect_yaml(dir, &mut found)?;
    Ok(found)
}

fn collect_yaml(dir: &Path, found: &mut YamlFiles) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || name == "node_modules" || name == "target" {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, found)?;
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            if weir_spec::is_test_file(&path) { found.tests.push(path) } else { found.pipelines.push(path) }
        }
    }
    Ok(())
}
