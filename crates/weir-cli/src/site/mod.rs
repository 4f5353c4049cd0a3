//! `weir docs`: a static site documenting a directory of pipelines. Plain HTML with inline SVG and styles: it
//! opens from disk, needs no build step and no network, and runs no script.

mod columns;
mod graph;
mod page;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use weir_spec::Pipeline;

use crate::Global;
use page::{Doc, History};

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Directories of pipelines (searched recursively; `NAME.test.yaml` files are left out) or pipeline files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The directory to write the site to (created; pages in it are replaced).
    #[arg(short, long, default_value = "site")]
    pub out: PathBuf,
}

pub fn docs(global: &Global, args: DocsArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            files.extend(crate::load::yaml_files(path)?.pipelines);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            anyhow::bail!("{} does not exist", path.display());
        }
    }
    // With `--state`, each page shows the pipeline's last runs and stored state.
    let store = match &global.state {
        Some(location) => Some(
            weir_engine::StateStore::at(location).with_context(|| format!("cannot open the state store {location}"))?,
        ),
        None => None,
    };
    let mut docs: Vec<Doc> = Vec::new();
    let mut broken = Vec::new();
    for file in files {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {shown}"))?;
        let pipeline = match Pipeline::from_yaml_str(&text) {
            Ok(p) => p,
            Err(d) => {
                broken.push(d.display_in(&shown).to_string());
                continue;
            }
        };
        if docs.iter().any(|d| d.pipeline.name() == pipeline.name()) {
            broken.push(format!("{shown}: another file already names a pipeline `{}`", pipeline.name()));
            continue;
        }
        let history = match &store {
            Some(store) => {
                Some(History { runs: store.runs(Some(pipeline.name()), 10)?, state: store.state(pipeline.name())? })
            }
            None => None,
        };
        docs.push(Doc { pipeline, text, file: shown, history });
    }
    docs.sort_by(|a, b| a.pipeline.name().cmp(b.pipeline.name()));
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let now = chrono::Utc::now();
    let write = |name: &str, html: String| {
        let path = args.out.join(name);
        std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))
    };
    write("index.html", page::index_page(&docs, &broken, now))?;
    for doc in &docs {
        let downstream: Vec<String> = docs
            .iter()
            .filter(|d| d.pipeline.triggers.iter().any(|t| t.after.iter().any(|a| a.value == doc.pipeline.name())))
            .map(|d| d.pipeline.name().to_string())
            .collect();
        write(&page::href(doc.pipeline.name()), page::pipeline_page(doc, &downstream, now))?;
    }
    for mistake in &broken {
        eprintln!("note: left out: {mistake}");
    }
    eprintln!("wrote {} pipeline pages and {}", docs.len(), args.out.join("index.html").display());
    Ok(ExitCode::SUCCESS)
}
