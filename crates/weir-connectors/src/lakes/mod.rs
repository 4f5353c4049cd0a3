//! Data-lake table formats: tables of Parquet files on local disk or object storage whose log of versions makes
//! writes atomic and old versions readable. One folder per format.

pub mod delta;
pub mod iceberg;
