//! The engine against a fake [`Connectors`] that records what it is asked to do: the order of prepare, commit,
//! abort and actions; retries of a load whose connection drops; and batched loads resumed after the last
//! committed batch.

mod fake;

mod commit_order;
mod resume;
mod retries;
