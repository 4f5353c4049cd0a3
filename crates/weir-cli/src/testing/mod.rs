//! `weir test`: runs the cases of `NAME.test.yaml` files against their pipelines (see `weir_spec::TestSuite`),
//! in parallel, and reports what differs.

mod captured;
mod case;
mod connectors;
mod junit;
mod mock_api;
mod rows;
mod update;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use weir_spec::TestSuite;

use case::{CaseReport, Outcome, Suite};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (`NAME.test.yaml`, beside `NAME.yaml`), or directories searched for them [default: .].
    pub paths: Vec<PathBuf>,
    /// Write the rows the runs produced over the expected `rows` that differ, instead of failing on them.
    #[arg(long)]
    pub update: bool,
    /// Also write a JUnit XML report to this file, for CI.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Only cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Cases run at once [default: the number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// One test file's cases, with the report of each once it ran.
pub struct FileReport {
    pub file: PathBuf,
    pub cases: Vec<CaseReport>,
}

pub async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let clock = Instant::now();
    let roots = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    let mut files = Vec::new();
    let mut pipelines = Vec::new();
    for root in &roots {
        if root.is_dir() {
            let found = crate::load::yaml_files(root)?;
            files.extend(found.tests);
            pipelines.extend(found.pipelines);
        } else if root.is_file() {
            files.push(root.clone());
        } else {
            anyhow::bail!("{} does not exist", root.display());
        }
    }
    if files.is_empty() {
        eprintln!("no test files (NAME.test.yaml beside NAME.yaml) under {}", shown(&roots));
        return Ok(ExitCode::from(2));
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let limit = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut broken = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut order = Vec::new();
    let mut tested = std::collections::HashSet::new();
    for file in &files {
        let (suite, cases) = match load_suite(file, args.update) {
            Ok(loaded) => loaded,
            Err(e) => {
                broken.push(format!("{e:#}"));
                continue;
            }
        };
        tested.insert(std::path::absolute(&suite.pipeline_file).unwrap_or_else(|_| suite.pipeline_file.clone()));
        let suite = Arc::new(suite);
        let mut names = Vec::new();
        for (name, case) in cases.0 {
            if args.filter.as_deref().is_some_and(|f| !name.value.contains(f)) {
                continue;
            }
            names.push(name.value.clone());
            let (suite, limit) = (suite.clone(), limit.clone());
            let index = (order.len(), names.len() - 1);
            tasks.spawn(async move {
                let _slot = limit.acquire_owned().await;
                (index, case::run_case(suite, name, case).await)
            });
        }
        order.push((file.clone(), names));
    }
    let mut reports: Vec<FileReport> =
        order.iter().map(|(file, _)| FileReport { file: file.clone(), cases: Vec::new() }).collect();
    let mut done: Vec<((usize, usize), CaseReport)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.context("a test case panicked")?);
    }
    done.sort_by_key(|(index, _)| *index);
    for ((file, _), report) in done {
        reports[file].cases.push(report);
    }
    for message in &broken {
        eprintln!("error: {message}");
    }
    let (mut passed, mut failed, mut errors) = (0, 0, broken.len());
    for file in &reports {
        for case in &file.cases {
            let at = format!("{}: {}", file.file.display(), case.name);
            match &case.outcome {
                Outcome::Passed => {
                    passed += 1;
                    println!("ok      {at} ({:.2} s)", case.seconds);
                }
                Outcome::Failed(failures) => {
                    failed += 1;
                    println!("FAILED  {at} ({:.2} s)", case.seconds);
                    for f in failures {
                        println!("    {f}");
                    }
                }
                Outcome::Error(message) => {
                    errors += 1;
                    println!("ERROR   {at}\n    {message}");
                }
            }
        }
        if args.update {
            let updates: Vec<_> = file.cases.iter().flat_map(|c| c.updates.iter().cloned()).collect();
            if !updates.is_empty() {
                let kept = update::rewrite(&file.file, updates)?;
                println!("updated {kept} expected rows in {}", file.file.display());
            }
        }
    }
    if let Some(path) = &args.junit {
        junit::write(path, &reports, &broken)?;
    }
    let untested = pipelines
        .iter()
        .filter(|p| !tested.contains(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())) && is_pipeline(p));
    for pipeline in untested {
        eprintln!("note: {} has no test file", pipeline.display());
    }
    println!(
        "{} cases: {passed} passed, {failed} failed, {errors} could not run ({:.1} s)",
        passed + failed + errors,
        clock.elapsed().as_secs_f64()
    );
    Ok(ExitCode::from(match (errors, failed) {
        (0, 0) => 0,
        (0, _) => 1,
        _ => 2,
    }))
}

fn shown(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// A test file and the pipeline it names (or the one beside it: `x.test.yaml` tests `x.yaml`).
fn load_suite(file: &Path, update: bool) -> anyhow::Result<(Suite, weir_spec::OrderedMap<weir_spec::TestCase>)> {
    let suite = TestSuite::from_file(file).map_err(anyhow::Error::msg)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let pipeline_file = match &suite.pipeline {
        Some(name) => dir.join(name),
        None => dir.join(pipeline_name(file).with_context(|| {
            format!("{}: name it NAME.test.yaml beside NAME.yaml, or say `pipeline: FILE`", file.display())
        })?),
    };
    let text = std::fs::read_to_string(&pipeline_file)
        .with_context(|| format!("{}: cannot read its pipeline {}", file.display(), pipeline_file.display()))?;
    Ok((Suite { file: file.to_path_buf(), pipeline_file, text, env: suite.env, update }, suite.cases))
}

/// `x.yaml` for `x.test.yaml` (and `.yml` alike).
fn pipeline_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    ["yaml", "yml"]
        .iter()
        .find_map(|ext| name.strip_suffix(&format!(".test.{ext}")).map(|stem| format!("{stem}.{ext}")))
}

fn is_pipeline(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| weir_spec::Pipeline::from_yaml_str(&text).is_ok())
}
