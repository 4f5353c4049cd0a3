pub mod copy;
pub mod files;
