pub mod csv;
pub mod json;
pub mod parquet;
pub mod listing;
pub mod webhook;
