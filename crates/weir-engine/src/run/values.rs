//! Template values and state: what `{{ var.x }}` and `{{ state.x }}` render to, and the state a run ends with.

use super::*;

pub(super) fn template_values(
    pipeline: &Pipeline,
    inputs: &RunInputs,
) -> HashMap<&'static str, HashMap<String, String>> {
    let text = |m: &BTreeMap<String, TypedValue>| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    HashMap::from([
        ("var", text(&inputs.variables)),
        ("state", text(&inputs.state)),
        (
            "run",
            HashMap::from([
                ("id".to_string(), inputs.run_id.clone()),
                ("started_at".to_string(), inputs.started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                ("date".to_string(), inputs.started.format("%Y-%m-%d").to_string()),
            ]),
        ),
        ("pipeline", HashMap::from([("name".to_string(), pipeline.name().to_string())])),
    ])
}

/// The column of `step` whose max a state value takes, if any.
pub(super) fn cursor_column<'a>(pipeline: &'a Pipeline, step: &str) -> Option<&'a str> {
    pipeline.state.values().find_map(|decl| match &decl.value.update {
        Some(StateUpdate::Max(target)) => match target.value.split_once('.') {
            Some((s, column)) if s == step => Some(column),
            _ => None,
        },
        _ => None,
    })
}

pub(super) fn next_state(
    pipeline: &Pipeline,
    inputs: &RunInputs,
    metrics: &RunMetrics,
) -> Result<BTreeMap<String, TypedValue>, EngineError> {
    let mut state = inputs.state.clone();
    for (name, decl) in &pipeline.state {
        let new = match &decl.value.update {
            None => None,
            Some(StateUpdate::RunStartedAt) => {
                Some(TypedValue::Timestamp(inputs.started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
            }
            Some(StateUpdate::Max(target)) => {
                let step = target.value.split_once('.').map_or("", |(s, _)| s);
                let max =
                    metrics.get(step).map(|c| c.max()).transpose().map_err(|e| attribute(pipeline.name(), step, e))?;
                match max.flatten() {
                    Some(scalar) => {
                        Some(typed_from_scalar(decl.value.ty, &scalar).map_err(|message| EngineError::Input {
                            pipeline: pipeline.name().to_string(),
                            message: format!("state `{name}`: {message}"),
                        })?)
                    }
                    None => None,
                }
            }
        };
        if let Some(value) = new {
            state.insert(name.clone(), value);
        }
    }
    Ok(state)
}
