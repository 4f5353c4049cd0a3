pub mod column_builder;
pub mod db_load;
pub mod db_scan;
pub mod files;
pub mod remote;
pub mod schema_diff;
pub mod sql_params;
pub mod types;
