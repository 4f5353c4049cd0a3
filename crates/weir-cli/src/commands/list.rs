//! `weir list` and `weir schema`: what this build knows, from the step kinds' list and the connection registry.

use std::fmt::Write;

use weir_connectors::registry;

/// The two tables of `weir list`: step kinds, then connection kinds with what each can do and whether this build
/// has it.
pub fn list() -> String {
    let mut out = String::from("Step kinds:\n");
    for (name, category, description) in weir_spec::STEP_KINDS {
        let _ = writeln!(out, "  {:<10} {name:<14} {description}", format!("{category:?}").to_lowercase());
    }
    out.push_str("\nConnection kinds:\n");
    for known in registry::kinds() {
        let kind = known.kind;
        let built = match (known.built, kind.feature) {
            (true, _) => "built".to_string(),
            (false, feature) => format!("needs --features {}", feature.unwrap_or(kind.name)),
        };
        let _ = writeln!(
            out,
            "  {:<11} {:<13} {:<24} {:<48} {}",
            kind.name,
            kind.family.name(),
            built,
            kind.can.names().join(", "),
            kind.description
        );
    }
    out.push_str("\n`weir schema` documents every step's fields and every connection kind's options.\n");
    out
}

/// The JSON Schema of pipeline files, with every connection kind's options.
pub fn schema() -> serde_json::Value {
    let kinds: Vec<&weir_spec::ConnectionKind> = registry::kinds().map(|k| k.kind).collect();
    weir_spec::json_schema(&kinds)
}
