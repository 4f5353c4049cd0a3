//! Weir pipeline files ("boards"): the types, the YAML parser that keeps line and column of every value, the checks
//! that need no engine, and the JSON Schema generated from the types.
//!
//! ```
//! let board = weir_spec::Pipeline::from_yaml_str(
//!     "name: demo\nsteps:\n  orders:\n    read_csv: { path: orders.csv }\n  out:\n    write_parquet: { input: orders, path: out.parquet }\n",
//! ).unwrap();
//! assert_eq!(board.steps.len(), 2);
//! assert!(weir_spec::check(&board, &weir_spec::Environment::empty()).is_empty());
//! ```

mod api;
mod check;
mod connection_kind;
mod dag;
mod diagnostic;
mod engine;
mod model;
mod step;
mod template;
mod test_suite;
mod trigger;
mod value;

pub use api::{Backoff, Duration, EnrichApi, HttpMethod, Paginate, ReadApi, Retry, RetryOn, WriteApi};
pub use check::{Environment, KnownKind, check};
pub use connection_kind::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};
pub use dag::Dag;
pub use diagnostic::{Diagnostic, Pos, did_you_mean};
pub use engine::ClusterEngine;
pub use model::{
    Alert, AlertOn, Check, Connection, DeadLetterTarget, EmailAlert, Pipeline, Severity, StateDecl, StateUpdate,
    Variable,
};
pub use serde_saphyr::Spanned;
pub use step::*;
pub use template::{SCOPES, Template, TemplateError, env_references, interpolate_env};
pub use test_suite::{
    CheckOutcome, DeadLetterExpect, Expect, Given, MockResponse, RealConnection, StepExpect, TestCase, TestRun,
    TestSuite, is_test_file,
};
pub use trigger::{CronSchedule, HmacAlgorithm, HmacAuth, Misfire, RateLimit, Trigger, Webhook};
pub use value::{TypedValue, ValueType};

/// The JSON Schema of a pipeline file, generated from the Rust types so it can never drift from the parser, with
/// each connection kind's options from `kinds`.
pub fn json_schema(kinds: &[&ConnectionKind]) -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Pipeline)).expect("a JSON Schema always serializes");
    if !kinds.is_empty() {
        let variants: Vec<serde_json::Value> = kinds.iter().map(|k| k.json_schema()).collect();
        let description = schema["$defs"]["Connection"]["description"].clone();
        schema["$defs"]["Connection"] = serde_json::json!({ "description": description, "oneOf": variants });
    }
    schema
}
