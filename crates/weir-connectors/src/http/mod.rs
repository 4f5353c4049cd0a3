//! REST APIs over HTTP: an `http` connection (base URL and authentication) and the `read_api` step.

mod auth;
mod client;
mod read;

pub use read::table;
