//! The checkpoint of a batch-loading `write_db` on PostgreSQL: one row per pipeline and step in
//! `weir_checkpoints`, written in the transaction that commits the batch, so the database itself says which
//! batches of a run are in, whatever happened to the process after.

use datafusion::error::Result;
use tokio_postgres::Client;
use weir_engine::{Batch, StepContext};

use super::pg_error;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS weir_checkpoints (
    pipeline text NOT NULL,
    step text NOT NULL,
    run_id text NOT NULL,
    batches bigint NOT NULL,
    rows bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, step))";

/// Creates the checkpoint table if missing, outside the batch's transaction. Looked up first, so batches after
/// the first do not each earn a "relation already exists" notice.
pub async fn create(client: &Client, connection: &str) -> Result<()> {
    let failed = |e: tokio_postgres::Error| {
        pg_error(&format!("cannot create the checkpoint table weir_checkpoints on `{connection}`"), &e)
    };
    let exists: Option<String> =
        client.query_one("SELECT to_regclass('weir_checkpoints')::text", &[]).await.map_err(failed)?.get(0);
    if exists.is_none() {
        client.batch_execute(CREATE).await.map_err(failed)?;
    }
    Ok(())
}

/// Records `batch` as committed, inside the transaction that commits its rows.
pub async fn record(client: &Client, cx: &StepContext, batch: Batch, rows: u64, connection: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO weir_checkpoints (pipeline, step, run_id, batches, rows) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pipeline, step) DO UPDATE SET run_id = EXCLUDED.run_id, batches = EXCLUDED.batches,
                 rows = EXCLUDED.rows, committed_at = now()",
            &[&cx.pipeline, &cx.step, &cx.run_id, &(batch.index as i64 + 1), &((batch.rows_before + rows) as i64)],
        )
        .await
        .map_err(|e| pg_error(&format!("cannot record the checkpoint of `{}` on `{connection}`", cx.step), &e))?;
    Ok(())
}

/// The batches of run `cx.run_id` the destination has committed.
pub async fn committed(client: &Client, cx: &StepContext, connection: &str) -> Result<u64> {
    let failed = |e: tokio_postgres::Error| {
        pg_error(&format!("cannot read the checkpoint of `{}` on `{connection}`", cx.step), &e)
    };
    let exists: Option<String> =
        client.query_one("SELECT to_regclass('weir_checkpoints')::text", &[]).await.map_err(failed)?.get(0);
    if exists.is_none() {
        return Ok(0);
    }
    let row = client
        .query_opt(
            "SELECT batches FROM weir_checkpoints WHERE pipeline = $1 AND step = $2 AND run_id = $3",
            &[&cx.pipeline, &cx.step, &cx.run_id],
        )
        .await
        .map_err(failed)?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}
