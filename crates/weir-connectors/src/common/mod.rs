pub mod files;
pub mod types;
