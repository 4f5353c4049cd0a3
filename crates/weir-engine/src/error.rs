use datafusion::error::DataFusionError;

/// Everything that can stop a run, split by who must act: the pipeline's author (`Spec`, `Plan`), the data or an
/// external system (`Step`), or Weir's own storage (`State`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The pipeline file has mistakes; every one is listed.
    #[error("pipeline `{pipeline}` is invalid:\n{}", render(.diagnostics))]
    Spec { pipeline: String, diagnostics: Vec<weir_spec::Diagnostic> },
    /// A step cannot be planned: SQL that does not parse, an unknown column, a bad option.
    #[error("pipeline `{pipeline}`, step `{step}`: {message}")]
    Plan { pipeline: String, step: String, message: String, pos: weir_spec::Pos },
    /// A step failed while data flowed.
    #[error("pipeline `{pipeline}`, step `{step}`: {}", user_message(.error))]
    Step { pipeline: String, step: String, error: DataFusionError },
    /// A variable given on the command line does not fit its declaration.
    #[error("pipeline `{pipeline}`: {message}")]
    Input { pipeline: String, message: String },
    /// The run was cancelled or ran out of time.
    #[error("pipeline `{pipeline}`: {reason}{}", .stage.as_ref().map(|s| format!(" (in step `{s}`)")).unwrap_or_default())]
    Stopped { pipeline: String, reason: String, stage: Option<String> },
    #[error("state store: {0}")]
    State(#[from] crate::state_store::StateError),
}

/// DataFusion's message without its category prefix ("Execution error: "), which says nothing to a pipeline author.
pub fn user_message(err: &DataFusionError) -> String {
    match err {
        DataFusionError::Execution(m) | DataFusionError::Plan(m) => m.clone(),
        DataFusionError::External(e) => e.to_string(),
        DataFusionError::Context(ctx, inner) => format!("{ctx}: {}", user_message(inner)),
        DataFusionError::Shared(inner) => user_message(inner),
        other => other.to_string(),
    }
}

fn render(diagnostics: &[weir_spec::Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n")
}

impl EngineError {
    /// The step a failure is attributed to, for the run record's `stage`.
    pub fn step(&self) -> Option<&str> {
        match self {
            Self::Plan { step, .. } | Self::Step { step, .. } => Some(step),
            Self::Stopped { stage, .. } => stage.as_deref(),
            _ => None,
        }
    }
}

/// Marks an error with the step it happened in; the innermost mark wins, because the step where data first
/// failed is the one to look at, not the load that was pulling on it.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct InStep {
    pub step: String,
    pub source: DataFusionError,
}

/// Wraps `err` as happening in `step`, unless an inner step already claimed it.
pub fn in_step(step: &str, err: DataFusionError) -> DataFusionError {
    if failing_step(&err).is_some() {
        return err;
    }
    DataFusionError::External(Box::new(InStep { step: step.to_string(), source: err }))
}

/// The step an error was marked with by [`in_step`].
pub fn failing_step(err: &DataFusionError) -> Option<&InStep> {
    find_in(err)
}

/// The first error of type `T` in `err`'s chain of sources, searching through DataFusion's wrappers.
pub(crate) fn find_in<T: std::error::Error + 'static>(err: &DataFusionError) -> Option<&T> {
    let mut current: &(dyn std::error::Error + 'static) = err;
    loop {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(DataFusionError::Shared(inner)) = current.downcast_ref::<DataFusionError>() {
            current = inner.as_ref();
            continue;
        }
        current = current.source()?;
    }
}

/// Splits a DataFusion error into the step it belongs to and the error itself, unwrapping the mark.
pub fn attribute(pipeline: &str, fallback_step: &str, err: DataFusionError) -> EngineError {
    let step = failing_step(&err).map_or_else(|| fallback_step.to_string(), |m| m.step.clone());
    EngineError::Step { pipeline: pipeline.to_string(), step, error: strip_mark(err) }
}

fn strip_mark(err: DataFusionError) -> DataFusionError {
    match err {
        DataFusionError::External(e) => match e.downcast::<InStep>() {
            Ok(mark) => strip_mark(mark.source),
            Err(e) => DataFusionError::External(e),
        },
        DataFusionError::Context(ctx, inner) => DataFusionError::Context(ctx, Box::new(strip_mark(*inner))),
        other => other,
    }
}
