//! Each run's log lines, kept in the state store so a run's page (and `weir runs --run`) shows what it said. A
//! `tracing` layer picks the lines emitted inside a run's span and appends them to the store it is attached to.

use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::state_store::StateStore;

/// Where run logs go, set once the command has opened its store; lines logged before that are not kept.
#[derive(Clone, Default)]
pub struct LogSink(Arc<OnceLock<Arc<StateStore>>>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "LogSink(attached)" } else { "LogSink(detached)" })
    }
}

impl LogSink {
    pub fn attach(&self, store: Arc<StateStore>) {
        let _ = self.0.set(store);
    }
}

/// The layer; install it beside the output layer (`registry().with(fmt).with(RunLogLayer::new(sink))`).
pub struct RunLogLayer {
    sink: LogSink,
}

impl RunLogLayer {
    pub fn new(sink: LogSink) -> Self {
        Self { sink }
    }
}

/// The run a span belongs to, kept in the span's extensions.
struct RunId(String);

#[derive(Default)]
struct Fields {
    run_id: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "run_id" => self.run_id = Some(value.to_string()),
            "message" => self.message.push_str(value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "run_id" => self.run_id = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for RunLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(run_id), Some(span)) = (fields.run_id, ctx.span(id)) {
            span.extensions_mut().insert(RunId(run_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(store) = self.sink.0.get() else { return };
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(run_id) = scope.from_root().find_map(|span| span.extensions().get::<RunId>().map(|r| r.0.clone()))
        else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format!("{}{}", fields.message, fields.rest);
        let _ = store.add_run_log(&run_id, event.metadata().level().as_str(), &line);
    }
}
