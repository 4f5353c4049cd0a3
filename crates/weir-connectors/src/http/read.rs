//! `read_api`: pages are fetched one after another and their records appended to an NDJSON file in the run's
//! scratch directory, which DataFusion then reads like any JSON source. Memory holds one page at a time; the
//! schema is inferred from every record of every page as it arrives, so a field first seen on page 40 is still
//! a column. A page's records are copied to the file as the text they came in (see [`super::page`]) while the
//! next page is on its way: each record is parsed once for its columns and once into Arrow, never into a tree.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use reqwest::Url;
use reqwest::header::LINK;
use serde_json::Value;
use serde_json_path::JsonPath;
use tracing::{debug, info, warn};
use weir_engine::{StepContext, truncate};
use weir_spec::{Paginate, ReadApi};

use super::client::{Page, Request};
use super::page::RecordsAt;
use super::{absolute, connect, method};
use crate::db::types::declared_schema;
use crate::files::json::{Columns, Inference, Origin, flattened, spilled_ndjson};

pub async fn table(session: &SessionContext, spec: &ReadApi, cx: &StepContext) -> Result<Arc<dyn TableProvider>> {
    let declared = declared_schema(spec.schema.as_ref())?;
    if cx.planning
        && let Some(schema) = declared
    {
        // Planning needs only the columns, which the step declares.
        let table = Arc::new(MemTable::try_new(schema, vec![vec![]])?);
        return flattened(session, table, spec.flatten);
    }
    let (base, client) =
        connect(cx, spec.connection.as_ref(), spec.timeout.0, spec.retry.as_ref(), spec.requests_per_second)?;
    let mut pager = Pager::new(spec)?;
    let mut request = pager.first(first_request(spec, cx, base)?);
    info!(step = %cx.step, "Starting extract from {}", request.url);

    std::fs::create_dir_all(&cx.scratch_dir)?;
    let spill = cx.scratch_dir.join(format!("{}.api.ndjson", cx.step));
    let mut out =
        Spill { file: BufWriter::with_capacity(1 << 20, File::create(&spill)?), columns: Inference::default() };
    let infer = declared.is_none();
    let (mut pages, mut total) = (0u64, 0u64);
    // The spill's line of each page's first record, to name a record that does not fit by its page.
    let mut page_starts = Vec::new();
    // One page at a time, unless the style knows the next pages' requests without their predecessors' answers.
    let window = if pager.predictable() && !cx.planning { spec.concurrency.unwrap_or(1).max(1) as u64 } else { 1 };
    let ahead = |pages: u64| spec.max_pages.map_or(window, |max| window.min(max.saturating_sub(pages)).max(1));
    let mut requests: Vec<Request> = (0..ahead(0)).map(|k| pager.ahead(&request, k)).collect();
    let mut answers = futures::future::join_all(requests.iter().map(|r| client.send(r))).await;
    loop {
        // The pages answered, read for their records, until one is the last.
        let mut arrived: Vec<(u64, Vec<Bytes>)> = Vec::new();
        let mut last = false;
        for (sent, answer) in requests.iter().zip(answers) {
            // A page fetched past the last one is never looked at, nor its error.
            let page = answer?;
            pages += 1;
            let shown = &sent.url;
            let failed = |e: String| DataFusionError::Execution(format!("page {pages} ({shown}): {e}"));
            let (records, rest) = pager.records.split(&page.body).map_err(failed)?;
            debug!(step = %cx.step, page = pages, records = records.len(), "fetched {shown}");
            let count = records.len();
            arrived.push((pages, records));
            last = if cx.planning {
                // One page shows the columns; explaining a pipeline must not read a whole API.
                true
            } else if spec.max_pages.is_some_and(|max| pages >= max) {
                info!(step = %cx.step, "Stopping at max_pages ({pages}); the API may have more");
                true
            } else if pager.has_more(&rest) == Some(false) {
                true
            } else {
                match pager.next(sent, &page, &rest, count)? {
                    Some(next) => {
                        request = next;
                        false
                    }
                    None => true,
                }
            };
            if last {
                break;
            }
        }
        // The next pages are asked for before these are written, so the API works while Weir does.
        requests = if last { Vec::new() } else { (0..ahead(pages)).map(|k| pager.ahead(&request, k)).collect() };
        let fetching = futures::future::join_all(requests.iter().map(|r| client.send(r)));
        let write = async {
            for (page, records) in &arrived {
                page_starts.push(total + 1);
                total += records.len() as u64;
                out.write(records, infer)
                    .map_err(|(i, e)| DataFusionError::Execution(format!("page {page}, record {}: {e}", i + 1)))?;
                if page % 1000 == 0 {
                    info!(step = %cx.step, pages = page, records = total, "Fetched {page} pages, {total} records so far");
                }
            }
            Ok::<_, DataFusionError>(())
        };
        let (fetched, written) = futures::join!(fetching, write);
        written?;
        if last {
            break;
        }
        answers = fetched;
    }
    let columns = out.finish()?;
    info!(step = %cx.step, records = total, pages, "Extracted {total} records from {pages} pages");

    if total == 0 && declared.is_none() {
        warn!(step = %cx.step, "the API returned no records; declare `schema:` so later steps see its columns even then");
        return Ok(Arc::new(MemTable::try_new(Arc::new(Schema::empty()), vec![vec![]])?));
    }
    let origin: Origin = Arc::new(move |line| {
        let page = page_starts.partition_point(|start| *start <= line);
        format!("page {page}, record {}", line + 1 - page_starts[page - 1])
    });
    let columns = match declared {
        Some(schema) => Columns::Declared(schema),
        None => Columns::Inferred(Arc::new(columns.schema()), columns.records()),
    };
    flattened(session, spilled_ndjson(session, &spill, columns, origin, cx)?, spec.flatten)
}

/// The NDJSON file of a step's records, and the columns of those written so far.
struct Spill {
    file: BufWriter<File>,
    columns: Inference,
}

impl Spill {
    /// Appends one page's records, one line each (a record's line breaks are whitespace, so spaces serve), and adds
    /// them to the columns if `infer`. A record whose columns cannot be inferred fails with its index.
    fn write(&mut self, records: &[Bytes], infer: bool) -> std::result::Result<(), (usize, String)> {
        for (i, record) in records.iter().enumerate() {
            if infer {
                self.columns.add(record).map_err(|e| (i, e))?;
            }
            let io = |e: std::io::Error| (i, e.to_string());
            if record.iter().any(|b| matches!(b, b'\n' | b'\r')) {
                let line: Vec<u8> = record.iter().map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }).collect();
                self.file.write_all(&line).map_err(io)?;
            } else {
                self.file.write_all(record).map_err(io)?;
            }
            self.file.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Inference> {
        self.file.flush()?;
        Ok(self.columns)
    }
}

fn first_request(spec: &ReadApi, cx: &StepContext, base: Option<String>) -> Result<Request> {
    let mut url = absolute(base, &cx.render(&spec.url)?)?;
    for (name, value) in spec.query.iter() {
        set_param(&mut url, name, &cx.render_str(value)?);
    }
    let headers = spec.headers.iter().map(|(k, v)| Ok((k.to_string(), cx.render_str(v)?))).collect::<Result<_>>()?;
    let body = match &spec.body {
        Some(body) => {
            let text = cx.render(body)?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| DataFusionError::Plan(format!("`body` is not JSON: {e}")))?;
            Some(Bytes::from(text))
        }
        None => None,
    };
    Ok(Request { method: method(spec.method), url, headers, body })
}

pub(super) fn parse_body(body: &[u8]) -> std::result::Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| not_json(body, e))
}

/// Why a response is not JSON, with its start.
pub(super) fn not_json(body: &[u8], e: serde_json::Error) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    format!("the response is not JSON ({e}); it starts: {shown:?}")
}

/// Where the records are and how the next page is asked for.
struct Pager {
    records: RecordsAt,
    has_more: Option<JsonPath>,
    style: Option<Style>,
}

enum Style {
    Cursor { param: String, from: JsonPath },
    NextUrl(JsonPath),
    LinkHeader,
    Offset { param: String, limit_param: String, limit: u64, offset: u64 },
    Page { param: String, size_param: Option<String>, size: Option<u64>, page: u64 },
}

impl Pager {
    fn new(spec: &ReadApi) -> Result<Self> {
        let style = match &spec.paginate {
            None => None,
            Some(Paginate::Cursor { param, from }) => {
                Some(Style::Cursor { param: param.clone(), from: parse_path(from)? })
            }
            Some(Paginate::NextUrl(path)) => Some(Style::NextUrl(parse_path(path)?)),
            Some(Paginate::LinkHeader) => Some(Style::LinkHeader),
            Some(Paginate::Offset { param, limit_param, limit }) => {
                Some(Style::Offset { param: param.clone(), limit_param: limit_param.clone(), limit: *limit, offset: 0 })
            }
            Some(Paginate::Page { param, start, size_param, size }) => {
                Some(Style::Page { param: param.clone(), size_param: size_param.clone(), size: *size, page: *start })
            }
        };
        let others: Vec<&str> = spec
            .has_more
            .iter()
            .map(|p| p.value.as_str())
            .chain(match &spec.paginate {
                Some(Paginate::Cursor { from, .. }) | Some(Paginate::NextUrl(from)) => Some(from.as_str()),
                _ => None,
            })
            .collect();
        Ok(Self {
            records: RecordsAt::new(spec.records.as_ref().map(|p| p.value.as_str()), &others)
                .map_err(DataFusionError::Plan)?,
            has_more: spec.has_more.as_ref().map(|p| parse_path(&p.value)).transpose()?,
            style,
        })
    }

    /// The first request, with the paging parameters its style starts from.
    fn first(&self, mut request: Request) -> Request {
        match &self.style {
            Some(Style::Offset { param, limit_param, limit, offset }) => {
                set_param(&mut request.url, param, &offset.to_string());
                set_param(&mut request.url, limit_param, &limit.to_string());
            }
            Some(Style::Page { param, size_param, size, page }) => {
                set_param(&mut request.url, param, &page.to_string());
                if let (Some(size_param), Some(size)) = (size_param, size) {
                    set_param(&mut request.url, size_param, &size.to_string());
                }
            }
            _ => {}
        }
        request
    }

    /// Whether the requests of later pages follow from the current one alone (offsets and page numbers), so they
    /// can be sent before its answer arrives.
    fn predictable(&self) -> bool {
        matches!(self.style, Some(Style::Offset { .. } | Style::Page { .. }))
    }

    /// The request `k` pages after `request` (the current page), assuming the pages between are full.
    fn ahead(&self, request: &Request, k: u64) -> Request {
        let mut later = request.clone();
        match &self.style {
            Some(Style::Offset { param, limit, offset, .. }) => {
                set_param(&mut later.url, param, &(offset + k * limit).to_string())
            }
            Some(Style::Page { param, page, .. }) => set_param(&mut later.url, param, &(page + k).to_string()),
            _ => {}
        }
        later
    }

    fn has_more(&self, body: &Value) -> Option<bool> {
        self.has_more.as_ref()?.query(body).first()?.as_bool()
    }

    /// The request for the page after `page`, or `None` when this was the last.
    fn next(&mut self, request: &Request, page: &Page, body: &Value, records: usize) -> Result<Option<Request>> {
        if records == 0 {
            return Ok(None);
        }
        let mut next = request.clone();
        match &mut self.style {
            None => return Ok(None),
            Some(Style::Cursor { param, from }) => {
                let cursor = match from.query(body).first() {
                    None | Some(Value::Null) => return Ok(None),
                    Some(Value::String(s)) if s.is_empty() => return Ok(None),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                set_param(&mut next.url, param, &cursor);
            }
            Some(Style::NextUrl(path)) => match path.query(body).first() {
                Some(Value::String(url)) if !url.is_empty() => next.url = join(&request.url, url)?,
                _ => return Ok(None),
            },
            Some(Style::LinkHeader) => {
                let links = page.headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok());
                match links.flat_map(|v| v.split(',')).find_map(next_link) {
                    Some(url) => next.url = join(&request.url, url)?,
                    None => return Ok(None),
                }
            }
            Some(Style::Offset { param, limit, offset, .. }) => {
                if (records as u64) < *limit {
                    return Ok(None);
                }
                *offset += records as u64;
                set_param(&mut next.url, param, &offset.to_string());
            }
            Some(Style::Page { param, size, page, .. }) => {
                if size.is_some_and(|size| (records as u64) < size) {
                    return Ok(None);
                }
                *page += 1;
                set_param(&mut next.url, param, &page.to_string());
            }
        }
        Ok(Some(next))
    }
}

/// The nodes `path` selects in a response (a single array node stands for its elements), or without a path the
/// response itself (its elements, if an array). Every record must be an object.
pub(crate) fn select_records<'a>(
    body: &'a Value,
    path: Option<&JsonPath>,
) -> std::result::Result<Vec<&'a Value>, String> {
    objects(select_values(body, path))
}

/// The nodes `path` selects in a body, as [`select_records`] does, whatever they are.
pub(crate) fn select_values<'a>(body: &'a Value, path: Option<&JsonPath>) -> Vec<&'a Value> {
    let nodes = match path {
        Some(path) => path.query(body).all(),
        None => vec![body],
    };
    match nodes.as_slice() {
        [Value::Array(items)] => items.iter().collect(),
        _ => nodes,
    }
}

/// `records`, if every one is an object.
pub(crate) fn objects(records: Vec<&Value>) -> std::result::Result<Vec<&Value>, String> {
    match records.iter().position(|r| !r.is_object()) {
        Some(i) => Err(format!("record {} is not a JSON object but {}", i + 1, truncate(&records[i].to_string(), 100))),
        None => Ok(records),
    }
}

pub(crate) fn parse_path(text: &str) -> Result<JsonPath> {
    JsonPath::parse(text).map_err(|e| DataFusionError::Plan(format!("`{text}` is not a JSONPath: {e}")))
}

pub(super) fn not_an_array(body: &Value) -> String {
    let arrays: Vec<String> = match body {
        Value::Object(map) => map.iter().filter(|(_, v)| v.is_array()).map(|(k, _)| format!("$.{k}")).collect(),
        _ => Vec::new(),
    };
    let hint = if arrays.is_empty() { String::new() } else { format!(" (arrays at: {})", arrays.join(", ")) };
    format!("the response is not an array of records; set `records:` to the JSONPath of its records{hint}")
}

/// Replaces (or adds) one query parameter.
fn set_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != name).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    url.query_pairs_mut().clear().extend_pairs(kept).append_pair(name, value);
}

fn join(base: &Url, next: &str) -> Result<Url> {
    base.join(next).map_err(|e| DataFusionError::Execution(format!("next page URL `{next}` is not a URL: {e}")))
}

/// The target of one `<url>; rel="next"` entry of a `Link` header.
fn next_link(entry: &str) -> Option<&str> {
    let (target, params) = entry.trim().split_once(';')?;
    let is_next = params.split(';').any(|p| {
        let p = p.trim().replace(' ', "");
        p == "rel=\"next\"" || p == "rel=next"
    });
    is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_entries() {
        assert_eq!(next_link(r#"<https://api.x/items?page=2>; rel="next""#), Some("https://api.x/items?page=2"));
        assert_eq!(next_link(r#" <https://api.x/items?page=1>; rel="prev""#), None);
        assert_eq!(next_link("<https://api.x/p3>; rel=next"), Some("https://api.x/p3"));
    }

    #[test]
    fn set_param_replaces() {
        let mut url = Url::parse("http://h/x?a=1&cursor=old").unwrap();
        set_param(&mut url, "cursor", "a b&c");
        assert_eq!(url.as_str(), "http://h/x?a=1&cursor=a+b%26c");
    }
}
