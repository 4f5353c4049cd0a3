//! Transform steps, each compiled to DataFusion plans rather than row loops.

mod dedup;
mod map;
mod pick;
mod sql;
mod validate;

pub use dedup::dedup;
pub use map::{filter, map};
pub use pick::all_picks;
pub use sql::{plan_sql, sql_inputs};
pub use validate::{ValidateTable, rows_as_json};
