//! `write_api`: the input is staged as NDJSON in the run's scratch directory while the run prepares its loads, and
//! sent when the run commits: an API has no transaction to roll back, so nothing is sent by a run that fails
//! before then (a bad input, an exceeded `max_invalid`). Requests carry a key derived from their content, so a
//! retry or a re-run after a crash repeats the same key and an idempotent API drops the duplicate.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tracing::info;
use weir_engine::{NewDeadLetter, PendingLoad, StepContext};
use weir_spec::WriteApi;

use super::client::{Client, Request};
use super::{Target, connect, method};

pub async fn write(spec: &WriteApi, cx: &StepContext, input: DataFrame) -> Result<Box<dyn PendingLoad>> {
    let (base, client) =
        connect(cx, spec.connection.as_ref(), spec.timeout.0, spec.retry.as_ref(), spec.requests_per_second)?;
    let target = Target::new(base, cx.render(&spec.url)?)?;
    let headers =
        spec.headers.iter().map(|(k, v)| Ok((k.to_string(), cx.render_str(v)?))).collect::<Result<Vec<_>>>()?;

    std::fs::create_dir_all(&cx.scratch_dir)?;
    let staged = cx.scratch_dir.join(format!("{}.push.ndjson", cx.step));
    let mut writer = LineDelimitedWriter::new(BufWriter::new(File::create(&staged)?));
    let mut stream = input.execute_stream().await?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    drop(writer);
    info!(step = %cx.step, rows, "Staged {rows} records to send when the run commits");
    Ok(Box::new(PendingPush { staged, rows, client, spec: spec.clone(), cx: cx.clone(), target, headers }))
}

struct PendingPush {
    staged: PathBuf,
    rows: u64,
    client: Client,
    spec: WriteApi,
    cx: StepContext,
    target: Target,
    headers: Vec<(String, String)>,
}

impl PendingPush {
    /// Sends one request for `records`; a request that fails for good hands its records to the step's `on_error`.
    async fn send(&self, records: Vec<Value>, sent: &AtomicU64) -> Result<()> {
        let body = match (self.spec.batch_size, &self.spec.wrap) {
            (1, _) => records[0].clone(),
            (_, Some(key)) => serde_json::json!({ key: records }),
            (_, None) => Value::Array(records.clone()),
        };
        let url = match self.target.url(&records[0]) {
            Ok(url) => url,
            Err(why) => return self.reject(records, why, None),
        };
        let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| DataFusionError::External(Box::new(e)))?);
        let mut headers = self.headers.clone();
        if let Some(header) = &self.spec.idempotency_header {
            let mut identity =
                format!("{}/{} {} {url} ", self.cx.pipeline, self.cx.step, method(self.spec.method)).into_bytes();
            identity.extend_from_slice(&body);
            headers.push((header.clone(), uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, &identity).to_string()));
        }
        let request = Request { method: method(self.spec.method), url: url.clone(), headers, body: Some(body) };
        match self.client.send(&request).await {
            Ok(_) => {
                sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.reject(records, e.to_string(), Some(format!("{} {url}", request.method))),
        }
    }

    fn reject(&self, records: Vec<Value>, error: String, origin: Option<String>) -> Result<()> {
        let letters = records
            .into_iter()
            .map(|record| NewDeadLetter {
                step: self.cx.step.clone(),
                record,
                error: error.clone(),
                origin: origin.clone(),
            })
            .collect();
        self.cx.reject(letters)
    }
}

#[async_trait]
impl PendingLoad for PendingPush {
    fn rows(&self) -> u64 {
        self.rows
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let lines = BufReader::new(File::open(&self.staged)?).lines();
        let records = lines.map(|line| {
            let line = line?;
            serde_json::from_str::<Value>(&line).map_err(|e| DataFusionError::External(Box::new(e)))
        });
        let sent = AtomicU64::new(0);
        let requests = futures::stream::iter(records)
            .try_chunks(self.spec.batch_size)
            .map_err(|e| e.1)
            .map_ok(|batch| self.send(batch, &sent))
            .try_buffer_unordered(self.spec.concurrency);
        let result = requests.try_collect::<()>().await;
        let _ = std::fs::remove_file(&self.staged);
        result?;
        let sent = sent.load(Ordering::Relaxed);
        info!(step = %self.cx.step, sent, "Sent {sent} of {} records", self.rows);
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        let _ = std::fs::remove_file(&self.staged);
    }
}
