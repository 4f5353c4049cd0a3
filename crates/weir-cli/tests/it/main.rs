//! Weir's end-to-end tests, one binary (so DataFusion is linked once): a module per area. Each runs the real
//! `weir` command against real servers: the PostgreSQL and MariaDB of the machine, and object stores, SFTP and
//! ClickHouse that the tests start on 127.0.0.1.

mod common;
mod conformance;

mod access;
mod api;
mod cli;
mod clickhouse;
mod cluster;
#[cfg(feature = "duckdb")]
mod duckdb;
mod iceberg;
mod inputs;
mod lakes;
mod models;
mod mysql;
mod object_store;
#[cfg(feature = "odbc")]
mod odbc;
mod parquet_interop;
mod pipeline_tests;
mod postgres;
mod registry;
mod resume;
mod serve;
mod sftp;
mod sharepoint;
mod site;
mod sqlite;
