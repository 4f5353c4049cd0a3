//! The figures a run records and logs: one row per step.

use super::*;

pub(crate) fn step_rows(pipeline: &Pipeline, planned: &Planned) -> Vec<StepMetricsRow> {
    let metrics = &planned.metrics;
    pipeline
        .steps
        .iter()
        .filter_map(|step| {
            let c = metrics.get(step.id())?;
            // A step the cluster ran for other cluster steps only was never counted: no figures beat zeros.
            if planned.placements.get(step.id()) == Some(&Placement::Cluster) && !c.read_here() {
                return None;
            }
            // A step read twice (a self-join) still takes each input row in once.
            let inputs: BTreeSet<&String> = planned.dag.inputs.get(step.id()).into_iter().flatten().collect();
            let rows_in = inputs.iter().filter_map(|i| metrics.get(i)).map(|c| c.rows()).sum();
            let changes = c.changes();
            Some(StepMetricsRow {
                step: step.id().to_string(),
                kind: step.kind.name().to_string(),
                category: format!("{:?}", step.kind.category()).to_lowercase(),
                rows_in,
                rows_out: c.rows(),
                rows_invalid: c.invalid(),
                rows_skipped: c.skipped(),
                bytes: c.bytes(),
                duration_ms: c.duration_ms(),
                retries: c.retries(),
                inserted: changes.map(|c| c.inserted),
                updated: changes.map(|c| c.updated),
                deleted: changes.map(|c| c.deleted),
                model: c.usage(),
            })
        })
        .collect()
}

pub(super) fn log_summary(steps: &[StepMetricsRow]) {
    for s in steps {
        if let Some(u) = s.model {
            let cost = u.cost_micros.map(|c| format!(", costing {:.6}", c as f64 / 1e6)).unwrap_or_default();
            info!(
                step = %s.step,
                requests = u.requests,
                cached = u.cached,
                input_tokens = u.input_tokens,
                output_tokens = u.output_tokens,
                cost_micros = u.cost_micros,
                "Asked the model {} times ({} texts answered from the cache): {} input and {} output tokens{cost}",
                u.requests,
                u.cached,
                u.input_tokens,
                u.output_tokens
            );
        }
        match s.category.as_str() {
            "extract" => info!(step = %s.step, records = s.rows_out, "Extracted {} records", s.rows_out),
            "load" => match (s.inserted, s.updated, s.deleted) {
                (Some(inserted), Some(updated), Some(deleted)) => {
                    let deleted_text = if deleted > 0 { format!(", {deleted} deleted") } else { String::new() };
                    info!(
                        step = %s.step,
                        records = s.rows_out,
                        inserted,
                        updated,
                        deleted,
                        "Load complete: {inserted} inserted, {updated} updated{deleted_text}"
                    )
                }
                _ => info!(
                    step = %s.step,
                    records = s.rows_out,
                    "Load complete: {} rows written (the destination does not tell inserted from updated)",
                    s.rows_out
                ),
            },
            "action" => info!(step = %s.step, records = s.rows_out, "Action complete: {} rows affected", s.rows_out),
            _ if s.kind == "validate" => info!(
                step = %s.step,
                valid = s.rows_out,
                invalid = s.rows_invalid,
                "Transform complete: {}/{} valid",
                s.rows_out,
                s.rows_out + s.rows_invalid
            ),
            _ => info!(step = %s.step, records = s.rows_out, "Transformed {} records", s.rows_out),
        }
    }
}
