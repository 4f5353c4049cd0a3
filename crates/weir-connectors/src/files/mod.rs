//! Files, local or on any object store: the CSV, JSON and Parquet readers, `list_files`, the file writers and
//! `copy_files`. Paths, globs, compression and Hive partitions are resolved in [`paths`]; remote paths go through
//! [`crate::object_store::remote`].

pub mod copy;
pub mod csv;
pub mod json;
pub mod listing;
pub mod parquet;
pub mod paths;
pub mod write;
