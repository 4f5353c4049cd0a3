//! `ai_extract`: each distinct text of the input is asked about once (or `batch_size` texts in one request),
//! concurrently within the step's limits, unless a kept answer has it. Every answer is checked against the fields;
//! those that fit are spilled as NDJSON to the run's scratch directory and joined back onto the input by text, so
//! the step streams its input and holds only the answers of one chunk of texts at a time. Rows whose text got no
//! fitting answer are handed to `on_error` whole (dead letters keep the row, the reason and the model's raw
//! answer), and are not in the output: a replayed dead letter is loaded once.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::JoinType;
use datafusion::dataframe::DataFrame;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions::expr_fn::{coalesce, concat};
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tracing::info;
use weir_engine::{ModelUsage, NewDeadLetter, StepContext, rows_as_json, truncate};
use weir_spec::{AiExtract, OnError};

use super::fields::{Fields, ID};
use super::limits::Limits;
use super::{ChatModel, Question, Sending};
use crate::files::json::{Columns, Origin, json_type, spilled_ndjson};

/// The text of each input row, as a column while the step runs.
const TEXT: &str = "__weir_text";
/// The text an answer is about, in the answers' table.
const ANSWERED: &str = "__weir_answered_text";
/// Distinct texts asked about between two writes of kept answers.
const CHUNK: usize = 1024;
/// Requests a dry run prints.
const DRY_RUN_SHOWN: usize = 3;
/// How much of a model's raw answer a dead letter keeps.
const RAW_KEPT: usize = 2000;

pub async fn table(session: &SessionContext, spec: &AiExtract, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let input = session.table(spec.input.value.as_str()).await?;
    let input_schema = input.schema().clone();
    let fields = Fields::new(spec.field_list().map_err(DataFusionError::Plan)?);
    let prefix = spec.prefix.as_deref().unwrap_or("");
    for field in fields.arrow_fields(prefix) {
        if input_schema.field_with_unqualified_name(field.name()).is_ok() {
            return Err(DataFusionError::Plan(format!(
                "the field `{}` would hide the input column of that name; set `prefix:` (e.g. `prefix: ai_`)",
                field.name()
            )));
        }
    }
    let keyed = input.with_column(TEXT, cast(text_of(spec, &input_schema)?, DataType::Utf8))?;
    let conn = cx.connection(&spec.connection.value)?;
    let kind = crate::registry::model(&conn.kind)
        .map_err(|e| DataFusionError::Plan(format!("connection `{}`: {e}", conn.name)))?;
    let retry = spec.retry.as_ref().or(cx.retry.as_ref()).cloned().unwrap_or_default();
    let model = kind.connect(&conn, Sending { timeout: spec.timeout.map(|t| t.0), retry, counters: cx.counters() })?;
    let asker = Asker::new(model, fields.clone(), spec, cx);

    std::fs::create_dir_all(&cx.scratch_dir)?;
    let spill = cx.scratch_dir.join(format!("{}.answers.ndjson", cx.step));
    let mut out = BufWriter::new(File::create(&spill)?);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    if !cx.planning {
        let texts = keyed.clone().select(vec![col(TEXT)])?.filter(col(TEXT).is_not_null())?.distinct()?;
        asker.answer_all(texts.execute_stream().await?, &mut out, &mut failures, &mut tally).await?;
    }
    out.flush()?;
    drop(out);
    if !cx.planning {
        info!(
            step = %cx.step,
            texts = tally.asked + tally.cached + failures.len() as u64,
            cached = tally.cached,
            unfit = failures.len(),
            "Read fields out of {} texts: {} answered by the model, {} from kept answers, {} without a fitting answer",
            tally.asked + tally.cached + failures.len() as u64,
            tally.asked,
            tally.cached,
            failures.len()
        );
        reject_rows(session, &keyed, spec, failures, cx).await?;
    }

    let origin: Origin = Arc::new(|line| format!("model answer {line}"));
    let answers = session.read_table(spilled_ndjson(
        session,
        &spill,
        Columns::Declared(fields.answers_schema(ANSWERED)),
        origin,
        cx,
    )?)?;
    let mut right = vec![ident(ANSWERED)];
    right.extend(fields.names().map(|name| ident(name).alias(format!("{prefix}{name}"))));
    // A dry run asks nothing: its rows go on with the new columns empty.
    let join = if cx.dry_run { JoinType::Left } else { JoinType::Inner };
    let joined = keyed.join(answers.select(right)?, join, &[TEXT], &[ANSWERED], None)?;
    let output: Vec<Expr> = input_schema
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .chain(fields.names().map(|name| ident(format!("{prefix}{name}"))))
        .collect();
    Ok(joined.select(output)?.into_view())
}

/// The text each row is read from: its `text` column, or its `template` filled in (a NULL value as empty text).
fn text_of(spec: &AiExtract, schema: &datafusion::common::DFSchema) -> Result<Expr> {
    let column = |name: &str| {
        schema.field_with_unqualified_name(name).map(|_| ident(name)).map_err(|_| {
            let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            DataFusionError::Plan(format!(
                "`{name}` is not a column of `{}`; its columns are {}",
                spec.input.value,
                known.join(", ")
            ))
        })
    };
    match (&spec.text, &spec.template) {
        (Some(text), None) => column(&text.value),
        (None, Some(template)) => {
            let text = template.value.as_str();
            let (mut parts, mut last) = (Vec::new(), 0);
            for placeholder in crate::http::FIELD.captures_iter(text) {
                let whole = placeholder.get(0).expect("the whole match");
                parts.push(lit(&text[last..whole.start()]));
                parts.push(coalesce(vec![cast(column(&placeholder[1])?, DataType::Utf8), lit("")]));
                last = whole.end();
            }
            parts.push(lit(&text[last..]));
            Ok(concat(parts))
        }
        _ => Err(DataFusionError::Plan("an ai_extract step needs exactly one of `text` and `template`".into())),
    }
}

/// Hands the rows whose text got no fitting answer, and those without a text, to `on_error`, with the reason.
async fn reject_rows(
    session: &SessionContext,
    keyed: &DataFrame,
    spec: &AiExtract,
    failures: Vec<(String, String)>,
    cx: &StepContext,
) -> Result<()> {
    let without_text = keyed.clone().filter(col(TEXT).is_null())?;
    let why_no_text = match &spec.text {
        Some(column) => format!("there is no text to read: `{}` is NULL", column.value),
        None => "there is no text to read".to_string(),
    };
    let mut rejected = vec![(without_text, Some(why_no_text))];
    if !failures.is_empty() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(ANSWERED, DataType::Utf8, false),
            Field::new("__weir_reason", DataType::Utf8, false),
        ]));
        let (texts, reasons): (Vec<String>, Vec<String>) = failures.into_iter().unzip();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(texts)), Arc::new(StringArray::from(reasons))],
        )?;
        let failed = session.read_table(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
        rejected.push((keyed.clone().join(failed, JoinType::Inner, &[TEXT], &[ANSWERED], None)?, None));
    }
    for (rows, reason) in rejected {
        let mut rows = rows.execute_stream().await?;
        while let Some(batch) = rows.next().await {
            let letters = rows_as_json(&batch?)?
                .into_iter()
                .map(|mut row| {
                    let record = row.as_object_mut().expect("rows are objects");
                    record.remove(TEXT);
                    record.remove(ANSWERED);
                    let error = match (&reason, record.remove("__weir_reason")) {
                        (Some(reason), _) => reason.clone(),
                        (None, Some(Value::String(reason))) => reason,
                        (None, _) => "no fitting answer".to_string(),
                    };
                    NewDeadLetter { step: cx.step.clone(), record: row, error, origin: None }
                })
                .collect();
            cx.reject(letters)?;
        }
    }
    Ok(())
}

/// What the step has done so far.
#[derive(Debug, Default)]
struct Tally {
    asked: u64,
    cached: u64,
}

/// One fitting answer: the text it is about, and its fields.
type Answer = (String, Map<String, Value>);

/// What one request settled: the fitting answers and the texts that got none, with the reason.
#[derive(Default)]
struct Settled {
    fitting: Vec<Answer>,
    failed: Vec<(String, String)>,
}

struct Asker<'a> {
    model: Box<dyn ChatModel>,
    fields: Fields,
    spec: &'a AiExtract,
    cx: &'a StepContext,
    limits: Limits,
    system: String,
    examples: Vec<(String, String)>,
    schema: Value,
    /// The hash of everything but the text that decides an answer: the model, the prompt and the fields.
    key_prefix: Sha256,
    shown: AtomicUsize,
}

impl<'a> Asker<'a> {
    fn new(model: Box<dyn ChatModel>, fields: Fields, spec: &'a AiExtract, cx: &'a StepContext) -> Self {
        let batched = spec.batch_size > 1;
        let task = spec.instructions.as_deref().unwrap_or("Extract the fields below from the text.");
        let system = if batched {
            format!(
                "{task}\n\nYou are given a JSON array of texts, each with an `id`. Answer with one JSON object \
                 {{\"records\": [...]}} holding one record per text, with the text's `id` and exactly these fields:\n{}\
                 Use null where a field allows it and the text does not say. Answer with the JSON object only.",
                fields.describe()
            )
        } else {
            format!(
                "{task}\n\nAnswer with one JSON object with exactly these fields:\n{}\
                 Use null where a field allows it and the text does not say. Answer with the JSON object only.",
                fields.describe()
            )
        };
        let examples = spec
            .examples
            .iter()
            .map(|e| {
                if batched {
                    let mut answer = e.answer.clone();
                    answer.insert(ID.into(), json!(1));
                    (json!([{ ID: 1, "text": e.text }]).to_string(), json!({ "records": [answer] }).to_string())
                } else {
                    (e.text.clone(), Value::Object(e.answer.clone()).to_string())
                }
            })
            .collect();
        let schema = if batched { fields.batch_schema() } else { fields.record_schema(false) };
        let identity = json!([model.identity(), system, examples, schema]).to_string();
        let key_prefix = Sha256::new_with_prefix(format!("{}:{identity}", identity.len()));
        Self {
            model,
            fields,
            limits: Limits::new(spec.requests_per_minute, spec.tokens_per_minute),
            spec,
            cx,
            system,
            examples,
            schema,
            key_prefix,
            shown: AtomicUsize::new(0),
        }
    }

    /// Where a text's answer is kept: the model, the prompt, the fields and the text, hashed.
    fn key(&self, text: &str) -> String {
        let mut hasher = self.key_prefix.clone();
        hasher.update(text.as_bytes());
        hex::encode(hasher.finalize())
    }

    fn question(&self, texts: &[String]) -> Question {
        let user = match texts {
            [one] if self.spec.batch_size == 1 => one.clone(),
            _ => {
                let items: Vec<Value> =
                    texts.iter().enumerate().map(|(i, t)| json!({ ID: i + 1, "text": t })).collect();
                Value::Array(items).to_string()
            }
        };
        Question { system: self.system.clone(), examples: self.examples.clone(), user, schema: self.schema.clone() }
    }

    /// Answers every text of `texts`: kept answers first, then the model, with `concurrency` requests in flight
    /// all along (the next texts are looked up while requests are out). Fitting answers are written to `out` and
    /// kept; the others are added to `failures`. With `on_error: fail`, the first failure stops the asking.
    async fn answer_all(
        &self,
        mut texts: SendableRecordBatchStream,
        out: &mut impl Write,
        failures: &mut Vec<(String, String)>,
        tally: &mut Tally,
    ) -> Result<()> {
        let mut queue: VecDeque<Vec<String>> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        let mut to_keep = Vec::new();
        let mut texts_left = true;
        loop {
            if texts_left && queue.len() < self.spec.concurrency {
                let mut chunk = Vec::new();
                while chunk.len() < CHUNK {
                    let Some(batch) = texts.next().await else {
                        texts_left = false;
                        break;
                    };
                    chunk.extend(batch?.column(0).as_string::<i32>().iter().flatten().map(str::to_string));
                }
                let pending = self.kept_answers(chunk, out, tally)?;
                queue.extend(pending.chunks(self.spec.batch_size).map(<[String]>::to_vec));
                continue;
            }
            while in_flight.len() < self.spec.concurrency
                && let Some(group) = queue.pop_front()
            {
                in_flight.push(self.ask(group));
            }
            let Some(settled) = in_flight.next().await else { break };
            let Settled { fitting, failed } = settled?;
            tally.asked += fitting.len() as u64;
            for (text, answer) in fitting {
                if self.spec.cache {
                    to_keep.push((self.key(&text), Value::Object(answer.clone()).to_string()));
                }
                write_answer(out, &text, answer)?;
            }
            failures.extend(failed);
            if self.cx.on_error == OnError::Fail && !failures.is_empty() {
                break;
            }
            if to_keep.len() >= CHUNK {
                self.cx.keep_model_answers(&std::mem::take(&mut to_keep))?;
            }
        }
        self.cx.keep_model_answers(&to_keep)
    }

    /// Writes the kept answers of `texts` to `out`; the texts still to ask about. A dry run prints the first
    /// requests it would send and asks about none.
    fn kept_answers(&self, texts: Vec<String>, out: &mut impl Write, tally: &mut Tally) -> Result<Vec<String>> {
        let keys: Vec<String> = texts.iter().map(|t| self.key(t)).collect();
        let kept = if self.spec.cache { self.cx.model_answers(&keys)? } else { Default::default() };
        let (mut pending, mut cached) = (Vec::new(), 0);
        for (text, key) in texts.into_iter().zip(&keys) {
            match kept.get(key).and_then(|answer| serde_json::from_str::<Map<String, Value>>(answer).ok()) {
                Some(answer) => {
                    cached += 1;
                    write_answer(out, &text, answer)?;
                }
                None => pending.push(text),
            }
        }
        if cached > 0 {
            tally.cached += cached;
            self.cx.counters().add_usage(ModelUsage { cached, ..ModelUsage::default() });
        }
        if !self.cx.dry_run {
            return Ok(pending);
        }
        for group in pending.chunks(self.spec.batch_size) {
            if self.shown.fetch_add(1, Ordering::Relaxed) < DRY_RUN_SHOWN {
                let request = serde_json::to_string_pretty(&self.model.request(&self.question(group)))
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                info!(step = %self.cx.step, "Dry run: would send\n{request}");
            }
        }
        Ok(Vec::new())
    }

    /// One request about `texts`, and what it settled. A request that failed for good fails all of its texts.
    async fn ask(&self, texts: Vec<String>) -> Result<Settled> {
        let question = self.question(&texts);
        let prompt_chars = question.system.len()
            + question.user.len()
            + question.examples.iter().map(|(q, a)| q.len() + a.len()).sum::<usize>();
        // About four characters a token, and the longest answer allowed.
        let estimate = (prompt_chars / 4) as u64 + self.model.max_answer_tokens();
        self.limits.admit(estimate).await;
        let reply = match self.model.ask(&question).await {
            Ok(reply) => reply,
            Err(e) => {
                self.limits.settle(estimate, 0).await;
                let why = e.to_string();
                return Ok(Settled {
                    fitting: Vec::new(),
                    failed: texts.into_iter().map(|t| (t, why.clone())).collect(),
                });
            }
        };
        self.limits.settle(estimate, reply.input_tokens + reply.output_tokens).await;
        self.cx.counters().add_usage(ModelUsage {
            requests: 1,
            cached: 0,
            input_tokens: reply.input_tokens,
            output_tokens: reply.output_tokens,
            cost_micros: self.model.cost_micros(reply.input_tokens, reply.output_tokens),
        });
        let raw = match reply.answer {
            Ok(raw) => raw,
            Err(why) => {
                return Ok(Settled {
                    fitting: Vec::new(),
                    failed: texts.into_iter().map(|t| (t, why.clone())).collect(),
                });
            }
        };
        let unfit = |why: String| format!("{why}; the model answered: {}", truncate(&raw, RAW_KEPT));
        let mut settled = Settled::default();
        if self.spec.batch_size == 1 {
            let text = texts.into_iter().next().expect("one text a request");
            match json_object(&raw).and_then(|answer| self.fields.check(&answer)) {
                Ok(answer) => settled.fitting.push((text, answer)),
                Err(why) => settled.failed.push((text, unfit(why))),
            }
            return Ok(settled);
        }
        let records = match json_object(&raw).and_then(|mut answer| match answer.remove("records") {
            Some(Value::Array(records)) => Ok(records),
            _ => Err("the answer has no `records` array".to_string()),
        }) {
            Ok(records) => records,
            Err(why) => {
                settled.failed = texts.into_iter().map(|t| (t, unfit(why.clone()))).collect();
                return Ok(settled);
            }
        };
        for (i, text) in texts.into_iter().enumerate() {
            let id = i as u64 + 1;
            let record =
                records.iter().filter_map(Value::as_object).find(|r| r.get(ID).and_then(Value::as_u64) == Some(id));
            match record.map(|r| self.fields.check(r)) {
                Some(Ok(answer)) => settled.fitting.push((text, answer)),
                Some(Err(why)) => settled.failed.push((text, unfit(format!("record {id}: {why}")))),
                None => settled.failed.push((text, unfit(format!("the answer has no record with id {id}")))),
            }
        }
        Ok(settled)
    }
}

/// The JSON object a model answered, allowing for a Markdown code fence around it.
fn json_object(raw: &str) -> std::result::Result<Map<String, Value>, String> {
    let trimmed = raw.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    match serde_json::from_str::<Value>(unfenced.trim()) {
        Ok(Value::Object(answer)) => Ok(answer),
        Ok(other) => Err(format!("the answer is JSON but not an object ({})", json_type(&other))),
        Err(e) => Err(format!("the answer is not JSON ({e})")),
    }
}

/// One line of the answers' table.
fn write_answer(out: &mut impl Write, text: &str, mut answer: Map<String, Value>) -> Result<()> {
    answer.insert(ANSWERED.into(), Value::String(text.to_string()));
    serde_json::to_writer(&mut *out, &answer).map_err(|e| DataFusionError::External(Box::new(e)))?;
    out.write_all(b"\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_with_or_without_a_code_fence() {
        assert_eq!(json_object("```json\n{\"a\": 1}\n```").unwrap()["a"], 1);
        assert_eq!(json_object(" {\"a\": 2} ").unwrap()["a"], 2);
        assert!(json_object("[1]").unwrap_err().contains("not an object (an array)"));
        assert!(json_object("Sure! Here it is").unwrap_err().contains("not JSON"));
    }
}
