//! `enrich_api`: one request per distinct key of the input, concurrently within the step's limits; the answers
//! (tagged with their key) are spilled as NDJSON to the run's scratch directory and LEFT JOINed back onto the
//! input, so a row whose lookup failed keeps NULLs in the new columns. The DAG counts this step as reading its
//! input twice, so the engine runs the input once into a scratch file that both reads scan.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::catalog::TableProvider;
use datafusion::common::JoinType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use tracing::info;
use weir_engine::{NewDeadLetter, StepContext};
use weir_spec::EnrichApi;

use super::client::{Client, Request};
use super::read::{parse_body, parse_path, select_records};
use super::{Target, connect, method};
use crate::db::types::declared_schema;
use crate::files::json::{Columns, Origin, spilled_ndjson};

pub async fn table(session: &SessionContext, spec: &EnrichApi, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let input = session.table(spec.input.value.as_str()).await?;
    let input_schema = input.schema().clone();
    for key in &spec.keys {
        if input_schema.field_with_unqualified_name(key).is_err() {
            return Err(DataFusionError::Plan(format!("key `{key}` is not a column of `{}`", spec.input.value)));
        }
    }
    let (base, client) =
        connect(cx, spec.connection.as_ref(), spec.timeout.0, spec.retry.as_ref(), spec.requests_per_second)?;
    let lookup = Lookup {
        client,
        target: Target::new(base, cx.render(&spec.url)?)?,
        headers: spec.headers.iter().map(|(k, v)| Ok((k.to_string(), cx.render_str(v)?))).collect::<Result<_>>()?,
        records: spec.records.as_ref().map(|p| parse_path(&p.value)).transpose()?,
        spec,
        cx,
    };

    std::fs::create_dir_all(&cx.scratch_dir)?;
    let spill = cx.scratch_dir.join(format!("{}.enrich.ndjson", cx.step));
    let mut out = BufWriter::new(File::create(&spill)?);
    let keys: Vec<&str> = spec.keys.iter().map(String::as_str).collect();
    // Planning (explain) looks up one key at most, and none when the answer's columns are declared.
    let mut distinct = input.clone().select_columns(&keys)?.distinct()?;
    if cx.planning {
        distinct = distinct.limit(0, Some(usize::from(spec.schema.is_none())))?;
    }
    let mut distinct = distinct.execute_stream().await?;
    let (mut looked_up, mut answers, mut failed) = (0u64, 0u64, 0u64);
    while let Some(batch) = distinct.next().await {
        let mut json = LineDelimitedWriter::new(Vec::new());
        json.write(&batch?)?;
        json.finish()?;
        let keys: Vec<Map<String, Value>> = json
            .into_inner()
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| DataFusionError::External(Box::new(e))))
            .collect::<Result<_>>()?;
        let mut results =
            futures::stream::iter(keys.into_iter().map(|key| lookup.fetch(key))).buffer_unordered(spec.concurrency);
        while let Some(result) = results.next().await {
            looked_up += 1;
            match result? {
                Some(rows) => {
                    answers += rows.len() as u64;
                    for row in rows {
                        serde_json::to_writer(&mut out, &row).map_err(|e| DataFusionError::External(Box::new(e)))?;
                        out.write_all(b"\n")?;
                    }
                }
                None => failed += 1,
            }
        }
    }
    out.flush()?;
    drop(out);
    info!(step = %cx.step, looked_up, answers, failed, "Looked up {looked_up} keys: {answers} answers, {failed} failed");

    // The answers' columns: declared (plus the keys, typed as in the input) or inferred from every answer.
    let declared = match declared_schema(spec.schema.as_ref())? {
        Some(answer) => {
            let mut fields = Vec::new();
            for key in &spec.keys {
                fields.push(Field::new(key, input_schema.field_with_unqualified_name(key)?.data_type().clone(), true));
            }
            fields.extend(answer.fields().iter().filter(|f| !spec.keys.contains(f.name())).map(|f| f.as_ref().clone()));
            Some(Arc::new(Schema::new(fields)))
        }
        None => None,
    };
    if answers == 0 && declared.is_none() {
        // Nothing to join: the input, unchanged.
        return Ok(input.into_view());
    }
    let origin: Origin = Arc::new(|line| format!("lookup answer {line}"));
    let answers = session.read_table(spilled_ndjson(
        session,
        &spill,
        declared.map_or(Columns::FromFile, Columns::Declared),
        origin,
        cx,
    )?)?;

    let prefix = spec.prefix.as_deref().unwrap_or("");
    let mut right: Vec<Expr> = Vec::new();
    for key in &spec.keys {
        let ty = input_schema.field_with_unqualified_name(key)?.data_type().clone();
        right.push(cast(ident(key), ty).alias(format!("__weir_key_{key}")));
    }
    let mut added = Vec::new();
    for field in answers.schema().fields().iter().filter(|f| !spec.keys.contains(f.name())) {
        let name = format!("{prefix}{}", field.name());
        if input_schema.field_with_unqualified_name(&name).is_ok() {
            return Err(DataFusionError::Plan(format!(
                "the answers' field `{}` would hide the input column `{name}`; set `prefix:` (e.g. `prefix: api_`)",
                field.name()
            )));
        }
        right.push(ident(field.name()).alias(&name));
        added.push(name);
    }
    let answers = answers.select(right)?;
    let right_keys: Vec<String> = spec.keys.iter().map(|k| format!("__weir_key_{k}")).collect();
    let joined =
        input.join(answers, JoinType::Left, &keys, &right_keys.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
    let output: Vec<Expr> =
        input_schema.fields().iter().map(|f| ident(f.name())).chain(added.iter().map(ident)).collect();
    Ok(joined.select(output)?.into_view())
}

struct Lookup<'a> {
    client: Client,
    target: Target,
    headers: Vec<(String, String)>,
    records: Option<JsonPath>,
    spec: &'a EnrichApi,
    cx: &'a StepContext,
}

impl Lookup<'_> {
    /// The answers for one key, each tagged with the key's values; `None` when the lookup failed and the
    /// step's `on_error` let the run go on.
    async fn fetch(&self, key: Map<String, Value>) -> Result<Option<Vec<Map<String, Value>>>> {
        let key = Value::Object(key);
        let url = match self.target.url(&key) {
            Ok(url) => url,
            Err(why) => return self.reject(key, why, None),
        };
        let request = Request { method: method(self.spec.method), url, headers: self.headers.clone(), body: None };
        let origin = Some(format!("{} {}", request.method, request.url));
        let page = match self.client.send(&request).await {
            Ok(page) => page,
            Err(e) => return self.reject(key, e.to_string(), origin),
        };
        let body = match parse_body(&page.body) {
            Ok(body) => body,
            Err(why) => return self.reject(key, why, origin),
        };
        let rows = match select_records(&body, self.records.as_ref()) {
            Ok(rows) => rows,
            Err(why) => return self.reject(key, why, origin),
        };
        let Value::Object(key) = key else { unreachable!("built as an object") };
        Ok(Some(
            rows.into_iter()
                .map(|row| {
                    let mut row = row.as_object().cloned().unwrap_or_default();
                    row.extend(key.clone());
                    row
                })
                .collect(),
        ))
    }

    fn reject(&self, key: Value, error: String, origin: Option<String>) -> Result<Option<Vec<Map<String, Value>>>> {
        self.cx.reject(vec![NewDeadLetter { step: self.cx.step.clone(), record: key, error, origin }])?;
        Ok(None)
    }
}
