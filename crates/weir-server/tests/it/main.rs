//! weir-server's integration tests, one binary: a module per area.

mod hooks;
mod schedule;
