//! `read_delta`: a Delta table as a DataFusion table, at its newest version, as of a version or an instant, or
//! as the changes committed after a version (its change data feed).
//!
//! The table is delta-rs's own provider, so DataFusion pushes the step's and later steps' filters and columns
//! into it: partitions and files whose statistics rule a filter out are skipped, and `weir explain` shows the
//! filters it received.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use deltalake_core::delta_datafusion::DeltaCdfTableProvider;
use deltalake_core::table::config::TablePropertiesExt;
use tracing::info;
use weir_engine::StepContext;
use weir_spec::ReadDelta;

use super::Location;

pub async fn table(session: &SessionContext, spec: &ReadDelta, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let location = Location::of(&spec.path, spec.connection.as_ref(), cx, false)?;
    let mut builder = location.builder()?;
    if let Some(version) = &spec.version {
        builder = builder.with_version(version.value);
    }
    if let Some(timestamp) = &spec.timestamp {
        builder = builder.with_timestamp(instant(&cx.render(timestamp)?)?);
    }
    let table = builder.load().await.map_err(|e| location.error(e))?;
    table.update_datafusion_session(&session.state()).map_err(|e| location.error(e))?;
    let version = table.version().unwrap_or_default();
    if let Some(since) = &spec.changes_since {
        let since = cx.render(since)?;
        // The version last read; empty or negative (a state's `default: -1`) reads the feed from the start.
        let start = match since.trim() {
            "" => 0,
            text => {
                let seen: i64 = text.parse().map_err(|_| {
                    DataFusionError::Plan(format!("`changes_since` is `{text}`, not a table version (a whole number)"))
                })?;
                u64::try_from(seen.saturating_add(1)).unwrap_or(0)
            }
        };
        info!(step = %cx.step, "Starting extract of the changes to {} after version {since}", location.shown());
        // With nothing committed since, the feed is empty rather than out of range.
        return changes(&table, start, start > version, &location);
    }
    info!(step = %cx.step, version, "Starting extract from Delta table {}", location.shown());
    table
        .table_provider()
        .await
        .map_err(|e| DataFusionError::External(format!("Delta table {}: {e}", location.shown()).into()))
}

/// The change data feed from version `start` on; `beyond` when that version does not exist yet.
fn changes(
    table: &deltalake_core::DeltaTable,
    start: u64,
    beyond: bool,
    location: &Location,
) -> Result<Arc<dyn TableProvider>> {
    let enabled =
        table.snapshot().map(|s| s.table_config().enable_change_data_feed()).map_err(|e| location.error(e))?;
    if !enabled {
        return Err(DataFusionError::Plan(format!(
            "Delta table {} has no change data feed, so `changes_since` cannot read it; create the table with \
             `properties: {{ delta.enableChangeDataFeed: \"true\" }}` (or set that property), or read it whole",
            location.shown()
        )));
    }
    let mut builder = table.clone().scan_cdf().with_starting_version(start);
    if beyond {
        builder = builder.with_allow_out_of_range();
    }
    let provider = DeltaCdfTableProvider::try_new(builder).map_err(|e| location.error(e))?;
    Ok(Arc::new(provider))
}

/// An ISO 8601 instant (`2024-01-15T00:00:00Z`), or a date read as its midnight UTC.
fn instant(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(DataFusionError::Plan(format!(
        "`timestamp` is `{text}`, not an ISO 8601 instant such as 2024-01-15T00:00:00Z or a date"
    )))
}
