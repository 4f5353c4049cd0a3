//! The counters `/metrics` serves in Prometheus' text format. Few series, kept in one mutex: runs finish at most
//! a few hundred times a second, far below where a lock would matter.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the duration and lag histograms.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Series {
    runs: BTreeMap<(String, &'static str), u64>,
    running: BTreeMap<String, i64>,
    durations: BTreeMap<String, Histogram>,
    rows: BTreeMap<(String, String), u64>,
    /// Rows loads inserted, updated and deleted, by pipeline, step and change.
    changed: BTreeMap<(String, String, &'static str), u64>,
    set_aside: BTreeMap<String, u64>,
    /// What steps asked of language models, by pipeline and step.
    model: BTreeMap<(String, String), weir_engine::ModelUsage>,
    lag: Histogram,
    queue_wait: Histogram,
    hooks: BTreeMap<(String, u16), u64>,
}

#[derive(Debug, Default)]
pub struct Metrics(Mutex<Series>);

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn run_started(&self, pipeline: &str) {
        *self.series().running.entry(pipeline.to_string()).or_default() += 1;
    }

    /// A finished run: its status, duration, rows per step, what its loads changed, what its steps asked of
    /// language models, and records set aside.
    pub fn run_finished(
        &self,
        pipeline: &str,
        status: &'static str,
        seconds: f64,
        steps: &weir_engine::RunMetrics,
        set_aside: u64,
    ) {
        let (rows, changes, usage) = (steps.snapshot(), steps.changes(), steps.usage());
        let mut s = self.series();
        *s.running.entry(pipeline.to_string()).or_default() -= 1;
        *s.runs.entry((pipeline.to_string(), status)).or_default() += 1;
        s.durations.entry(pipeline.to_string()).or_default().observe(seconds);
        for (step, n) in rows {
            *s.rows.entry((pipeline.to_string(), step)).or_default() += n;
        }
        for (step, u) in usage {
            let total = s.model.entry((pipeline.to_string(), step)).or_default();
            *total = *total + u;
        }
        for (step, c) in changes {
            for (change, n) in [("inserted", c.inserted), ("updated", c.updated), ("deleted", c.deleted)] {
                *s.changed.entry((pipeline.to_string(), step.clone(), change)).or_default() += n;
            }
        }
        *s.set_aside.entry(pipeline.to_string()).or_default() += set_aside;
    }

    /// How late a schedule fired.
    pub fn schedule_lag(&self, seconds: f64) {
        self.series().lag.observe(seconds);
    }

    /// How long a run waited for a server-wide slot.
    pub fn queue_wait(&self, seconds: f64) {
        self.series().queue_wait.observe(seconds);
    }

    pub fn hook(&self, hook: &str, status: u16) {
        *self.series().hooks.entry((hook.to_string(), status)).or_default() += 1;
    }

    /// The series, with the run queue as it is now: `queue` runs waiting, the oldest for `oldest` seconds.
    pub fn render(&self, queue: usize, oldest: f64) -> String {
        let s = self.series();
        let mut out = String::new();
        out.push_str("# HELP weir_runs_total Finished runs by pipeline and status.\n# TYPE weir_runs_total counter\n");
        for ((p, status), n) in &s.runs {
            let _ = writeln!(out, "weir_runs_total{{pipeline=\"{}\",status=\"{status}\"}} {n}", esc(p));
        }
        out.push_str("# HELP weir_runs_running Runs in progress by pipeline.\n# TYPE weir_runs_running gauge\n");
        for (p, n) in &s.running {
            let _ = writeln!(out, "weir_runs_running{{pipeline=\"{}\"}} {n}", esc(p));
        }
        out.push_str(
            "# HELP weir_run_duration_seconds Run durations by pipeline.\n# TYPE weir_run_duration_seconds histogram\n",
        );
        for (p, h) in &s.durations {
            h.render(&mut out, "weir_run_duration_seconds", &format!("pipeline=\"{}\"", esc(p)));
        }
        out.push_str("# HELP weir_rows_total Rows out of each step.\n# TYPE weir_rows_total counter\n");
        for ((p, step), n) in &s.rows {
            let _ = writeln!(out, "weir_rows_total{{pipeline=\"{}\",step=\"{}\"}} {n}", esc(p), esc(step));
        }
        out.push_str(
            "# HELP weir_rows_changed_total Rows loads inserted, updated and deleted, where the database tells.\n# TYPE weir_rows_changed_total counter\n",
        );
        for ((p, step, change), n) in &s.changed {
            let _ = writeln!(
                out,
                "weir_rows_changed_total{{pipeline=\"{}\",step=\"{}\",change=\"{change}\"}} {n}",
                esc(p),
                esc(step)
            );
        }
        out.push_str("# HELP weir_dead_letters_total Records set aside (dead-lettered or skipped).\n# TYPE weir_dead_letters_total counter\n");
        for (p, n) in &s.set_aside {
            let _ = writeln!(out, "weir_dead_letters_total{{pipeline=\"{}\"}} {n}", esc(p));
        }
        out.push_str("# HELP weir_model_requests_total Requests steps sent to language models.\n# TYPE weir_model_requests_total counter\n");
        for ((p, step), u) in &s.model {
            let _ = writeln!(
                out,
                "weir_model_requests_total{{pipeline=\"{}\",step=\"{}\"}} {}",
                esc(p),
                esc(step),
                u.requests
            );
        }
        out.push_str("# HELP weir_model_cache_hits_total Texts answered from kept model answers instead of a request.\n# TYPE weir_model_cache_hits_total counter\n");
        for ((p, step), u) in &s.model {
            let _ = writeln!(
                out,
                "weir_model_cache_hits_total{{pipeline=\"{}\",step=\"{}\"}} {}",
                esc(p),
                esc(step),
                u.cached
            );
        }
        out.push_str("# HELP weir_model_tokens_total Tokens language models counted, by direction.\n# TYPE weir_model_tokens_total counter\n");
        for ((p, step), u) in &s.model {
            for (direction, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                let _ = writeln!(
                    out,
                    "weir_model_tokens_total{{pipeline=\"{}\",step=\"{}\",direction=\"{direction}\"}} {n}",
                    esc(p),
                    esc(step)
                );
            }
        }
        out.push_str("# HELP weir_model_cost_total What model requests cost, at the connection's prices.\n# TYPE weir_model_cost_total counter\n");
        for ((p, step), u) in &s.model {
            if let Some(micros) = u.cost_micros {
                let _ = writeln!(
                    out,
                    "weir_model_cost_total{{pipeline=\"{}\",step=\"{}\"}} {}",
                    esc(p),
                    esc(step),
                    micros as f64 / 1e6
                );
            }
        }
        out.push_str("# HELP weir_schedule_lag_seconds Delay between a schedule's due time and its fire being claimed and queued (trigger lag; waiting for a slot is weir_run_queue_wait_seconds).\n# TYPE weir_schedule_lag_seconds histogram\n");
        s.lag.render(&mut out, "weir_schedule_lag_seconds", "");
        out.push_str("# HELP weir_run_queue_wait_seconds Time runs waited for a server-wide slot (--max-runs).\n# TYPE weir_run_queue_wait_seconds histogram\n");
        s.queue_wait.render(&mut out, "weir_run_queue_wait_seconds", "");
        out.push_str(
            "# HELP weir_run_queue_depth Runs waiting for a server-wide slot now.\n# TYPE weir_run_queue_depth gauge\n",
        );
        let _ = writeln!(out, "weir_run_queue_depth {queue}");
        out.push_str("# HELP weir_run_queue_oldest_seconds How long the longest-waiting run has waited.\n# TYPE weir_run_queue_oldest_seconds gauge\n");
        let _ = writeln!(out, "weir_run_queue_oldest_seconds {oldest}");
        out.push_str("# HELP weir_webhook_requests_total Webhook requests by hook and HTTP status.\n# TYPE weir_webhook_requests_total counter\n");
        for ((hook, status), n) in &s.hooks {
            let _ = writeln!(out, "weir_webhook_requests_total{{hook=\"{}\",status=\"{status}\"}} {n}", esc(hook));
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_engine::{ModelUsage, RunMetrics, StepCounters};

    use super::*;

    #[test]
    fn model_requests_tokens_and_cost_add_up_across_runs() {
        let metrics = Metrics::default();
        for _ in 0..2 {
            let run = RunMetrics::default();
            let counters = Arc::new(StepCounters::default());
            counters.add_usage(ModelUsage {
                requests: 3,
                cached: 1,
                input_tokens: 300,
                output_tokens: 60,
                cost_micros: Some(270),
            });
            run.insert("parsed", counters);
            metrics.run_started("addresses");
            metrics.run_finished("addresses", "success", 1.0, &run, 0);
        }
        let text = metrics.render(0, 0.0);
        for line in [
            r#"weir_model_requests_total{pipeline="addresses",step="parsed"} 6"#,
            r#"weir_model_cache_hits_total{pipeline="addresses",step="parsed"} 2"#,
            r#"weir_model_tokens_total{pipeline="addresses",step="parsed",direction="input"} 600"#,
            r#"weir_model_tokens_total{pipeline="addresses",step="parsed",direction="output"} 120"#,
            r#"weir_model_cost_total{pipeline="addresses",step="parsed"} 0.00054"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
