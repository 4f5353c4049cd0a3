pub mod backfill;
pub mod cluster;
pub mod init;
pub mod inspect;
pub mod list;
pub mod run;
pub mod serve;
pub mod validate;
