//! A live line of rows per step on a terminal; nothing when logs go to a file or a pipe.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use weir_engine::RunMetrics;

pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(metrics: RunMetrics, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self { bar: None, task: None };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("static template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut steps = metrics.snapshot();
                steps.sort();
                let line: Vec<String> =
                    steps.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{s}: {n}")).collect();
                shown.set_message(format!("rows {}", line.join("  ")));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { bar: Some(bar), task: Some(task) }
    }

    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
