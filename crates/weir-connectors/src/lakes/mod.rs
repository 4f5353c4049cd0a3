//! Data-lake table formats: tables of Parquet files on local disk or object storage whose log of versions makes
//! writes atomic and old versions readable. One folder per format.

pub mod delta;
pub mod iceberg;
mod refused;

/// Weir's pipeline, step and run, as a lake commit's metadata names them, for the table's history.
fn run_metadata(cx: &weir_engine::StepContext) -> [(String, String); 3] {
    [
        ("weir.pipeline".to_string(), cx.pipeline.clone()),
        ("weir.step".to_string(), cx.step.clone()),
        ("weir.run_id".to_string(), cx.run_id.clone()),
    ]
}
