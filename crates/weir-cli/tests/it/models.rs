//! `ai_extract` against OpenAI-compatible chat servers on 127.0.0.1: a scripted one (axum, in this test) for the
//! exact cases (malformed JSON, answers that break the schema, refusals, 429 with Retry-After, timeouts, a batch
//! answer missing a record, kept answers on a second run), and a real local language model (see `local_model`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Project, serve};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the scripted server saw: each request's texts, and how often each text was asked about.
#[derive(Clone, Default)]
struct Seen {
    texts: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Seen {
    fn texts(&self) -> Vec<String> {
        let mut texts = self.texts.lock().unwrap().clone();
        texts.sort();
        texts
    }
}

/// The answer the script gives for one text. `street|city|zip|country` answers those fields; a few words
/// misbehave on purpose. `fixed` is whether the prompt carries the fix a replay brings.
fn scripted(text: &str, fixed: bool) -> Value {
    match text {
        "MALFORMED" if !fixed => json!("{\"street\": \"1 Main St\", "),
        "MALFORMED" => json!({ "street": "1 Main St", "city": "Springfield", "zip": null, "country": "US" }),
        "WRONG TYPE" => json!({ "street": 5, "city": "Oslo", "zip": null, "country": "NO" }),
        "MARS" => json!({ "street": "1 Crater Rd", "city": "Olympus", "zip": null, "country": "MARS" }),
        _ => {
            let parts: Vec<&str> = text.split('|').collect();
            let part = |i: usize| parts.get(i).filter(|p| !p.is_empty()).map_or(Value::Null, |p| json!(p));
            json!({ "street": part(0), "city": part(1), "zip": part(2), "country": part(3) })
        }
    }
}

fn completion(content: Value, finish: &str) -> Response {
    let content = match content {
        Value::String(raw) => raw,
        other => other.to_string(),
    };
    axum::Json(json!({
        "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": finish }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20 },
    }))
    .into_response()
}

async fn chat(State(seen): State<Seen>, headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> Response {
    assert_eq!(headers["authorization"], "Bearer sk-test-secret", "the key is sent as a bearer token");
    seen.bodies.lock().unwrap().push(body.clone());
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    let fixed = system.contains("Never cut an answer short");
    let user = body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    let batch: Option<Vec<(u64, String)>> = serde_json::from_str::<Vec<Value>>(&user)
        .ok()
        .map(|items| items.iter().map(|i| (i["id"].as_u64().unwrap(), i["text"].as_str().unwrap().into())).collect());
    let texts: Vec<String> = match &batch {
        Some(items) => items.iter().map(|(_, t)| t.clone()).collect(),
        None => vec![user.clone()],
    };
    let attempt = {
        let mut attempts = seen.attempts.lock().unwrap();
        let n = attempts.entry(texts.join(",")).or_default();
        *n += 1;
        *n
    };
    seen.texts.lock().unwrap().extend(texts.iter().cloned());
    if let Some(items) = batch {
        let records: Vec<Value> = items
            .iter()
            .filter(|(_, text)| text != "DROPPED")
            .map(|(id, text)| {
                let mut record = scripted(text, fixed);
                record["id"] = json!(id);
                record
            })
            .collect();
        return completion(json!({ "records": records }), "stop");
    }
    match user.as_str() {
        busy if busy.starts_with("BUSY") && attempt <= 2 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response()
        }
        slow if slow.starts_with("SLOW") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            completion(scripted(&user, fixed), "stop")
        }
        "REFUSE" => axum::Json(json!({
            "choices": [{ "message": { "role": "assistant", "content": null, "refusal": "I can't help with that." }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 5 },
        }))
        .into_response(),
        "LONG" => completion(json!("{\"street\": \"1 Main"), "length"),
        _ => completion(scripted(&user, fixed), "stop"),
    }
}

fn scripted_server() -> (String, Seen) {
    let seen = Seen::default();
    let addr = serve(Router::new().route("/v1/chat/completions", post(chat)).with_state(seen.clone()));
    (format!("http://{addr}/v1"), seen)
}

fn pipeline(url: &str, extract: &str) -> String {
    format!(
        r#"name: addresses
connections:
  model:
    kind: openai
    url: {url}
    options: {{ model: scripted, api_key: "${{MODEL_KEY}}", input_price_per_1k: "0.5", output_price_per_1k: "2" }}
steps:
  raw:
    read_csv: {{ path: data/raw.csv }}
  parsed:
    on_error: dead_letter
    ai_extract:
      input: raw
      connection: model
      fields:
        street: {{ description: street and house number }}
        city: {{ type: string }}
        zip: {{ type: string, required: false }}
        country: {{ enum: [US, CA, GB, "NO"] }}
{extract}
  sorted:
    sql: {{ query: "SELECT id, street, city, zip, country FROM parsed ORDER BY id" }}
  out:
    write_csv: {{ input: sorted, path: out/parsed.csv }}
"#
    )
}

fn project(url: &str, extract: &str, csv: &str) -> Project {
    let p = Project::new().env("MODEL_KEY", "sk-test-secret");
    p.file("data/raw.csv", csv);
    p.file("p.yaml", &pipeline(url, extract));
    p
}

/// The `ai_extract` step's figures in the pipeline's latest run.
fn step_figures(p: &Project) -> Value {
    let runs: Value = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let steps: Vec<Value> = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--run", &id, "--json"])).unwrap();
    steps.into_iter().find(|s| s["step"] == "parsed").expect("the step's figures")
}

const ROWS: &str = "id,address\n\
    1,1 Main St|Springfield|12345|US\n\
    2,MALFORMED\n\
    3,WRONG TYPE\n\
    4,MARS\n\
    5,REFUSE\n\
    6,\n\
    7,BUSY|Boston|02101|US\n\
    8,1 Main St|Springfield|12345|US\n\
    9,LONG\n\
    10,2 High St|Leeds||GB\n";

#[test]
fn every_answer_is_checked_and_what_does_not_fit_is_dead_lettered_with_the_raw_answer() {
    let (url, seen) = scripted_server();
    let p = project(&url, "      text: address\n      concurrency: 4", ROWS);
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(!log.contains("sk-test-secret"), "the key is never printed:\n{log}");
    assert_eq!(
        p.read("out/parsed.csv"),
        "id,street,city,zip,country\n1,1 Main St,Springfield,12345,US\n7,BUSY,Boston,02101,US\n8,1 Main St,Springfield,12345,US\n10,2 High St,Leeds,,GB\n",
        "rows without a fitting answer are not loaded"
    );
    let letters = p.dlq("p.yaml");
    let reason = |id: i64| -> String {
        let letter = letters
            .iter()
            .find(|l| l["record"]["id"].as_i64() == Some(id))
            .unwrap_or_else(|| panic!("no dead letter for row {id}: {letters:#?}"));
        assert_eq!(letter["step"], "parsed");
        letter["error"].as_str().unwrap().to_string()
    };
    assert!(
        reason(2).contains("the answer is not JSON")
            && reason(2).contains(r#"the model answered: {"street": "1 Main St", "#),
        "{}",
        reason(2)
    );
    assert!(reason(3).contains("`street` should be of type string, but the answer has 5"), "{}", reason(3));
    assert!(reason(4).contains(r#"`country` is "MARS", which is not one of "US", "CA", "GB", "NO""#), "{}", reason(4));
    assert!(reason(5).contains("the model refused: I can't help with that."), "{}", reason(5));
    assert!(reason(6).contains("there is no text to read: `address` is NULL"), "{}", reason(6));
    assert!(reason(9).contains("cut off at max_tokens"), "{}", reason(9));
    assert_eq!(letters.len(), 6, "{letters:#?}");
    assert_eq!(
        letters.iter().find(|l| l["record"]["id"] == 2).unwrap()["record"]["address"],
        "MALFORMED",
        "the whole row is kept"
    );

    // One request per distinct text: the duplicate address is asked once, BUSY three times (two 429s).
    let texts = seen.texts();
    assert_eq!(texts.iter().filter(|t| t.starts_with("1 Main St")).count(), 1, "{texts:?}");
    assert_eq!(texts.iter().filter(|t| t.starts_with("BUSY")).count(), 3, "{texts:?}");
    assert_eq!(texts.len(), 10, "{texts:?}");
    let figures = step_figures(&p);
    assert_eq!(figures["retries"], 2, "{figures}");
    let model = &figures["model"];
    assert_eq!((model["requests"].as_u64(), model["cached"].as_u64()), (Some(8), Some(0)), "{figures}");
    // 8 answered requests of 100 prompt and 20 (the refusal 5) answer tokens, at 0.5 and 2 per 1,000.
    assert_eq!((model["input_tokens"].as_u64(), model["output_tokens"].as_u64()), (Some(800), Some(145)), "{figures}");
    assert_eq!(model["cost_micros"].as_u64(), Some(690_000), "{figures}");
    assert!(log.contains("Asked the model 8 times (0 texts answered from the cache): 800 input and 145 output tokens, costing 0.690000"), "{log}");

    // Strict structured output: the request holds the fields' schema, every property required, optional ones
    // nullable, and the instructions name each field.
    let body = seen.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["properties"]["zip"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(body["temperature"], 0.0);
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("- street (string): street and house number"));

    // A second run asks only about the texts that had no fitting answer: the others' answers were kept.
    let before = seen.texts().len();
    p.ok(&["run", "p.yaml"]);
    let asked_again = seen.texts().len() - before;
    assert_eq!(asked_again, 5, "MALFORMED, WRONG TYPE, MARS, REFUSE and LONG again: {:?}", seen.texts());
    let model = step_figures(&p)["model"].clone();
    assert_eq!((model["requests"].as_u64(), model["cached"].as_u64()), (Some(5), Some(3)), "{model}");
    let second_run = serde_json::from_str::<Value>(&p.ok(&["runs", "p.yaml", "--json"])).unwrap()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    p.ok(&["dlq", "purge", "p.yaml", "--run", &second_run]);

    // A prompt fix, then a replay: the malformed answer now parses and its row goes through; the others stay.
    p.file(
        "p.yaml",
        &pipeline(&url, "      text: address\n      instructions: Split the address. Never cut an answer short."),
    );
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("1 went through and were removed, 5 failed again"), "{log}");
    assert!(p.read("out/parsed.csv").contains("\n2,1 Main St,Springfield,,US\n"), "{log}");
}

#[test]
fn a_batched_request_checks_each_records_id() {
    let (url, seen) = scripted_server();
    let csv = "id,address\n1,1 A St|Oslo||NO\n2,2 B St|Leeds||GB\n3,DROPPED\n4,4 D St|York||GB\n5,5 E St|Bath||GB\n";
    let p = project(&url, "      text: address\n      batch_size: 2\n      concurrency: 1", csv);
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        p.read("out/parsed.csv"),
        "id,street,city,zip,country\n1,1 A St,Oslo,,NO\n2,2 B St,Leeds,,GB\n4,4 D St,York,,GB\n5,5 E St,Bath,,GB\n"
    );
    let letters = p.dlq("p.yaml");
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(letters[0]["error"].as_str().unwrap().contains("the answer has no record with id"), "{letters:#?}");
    assert_eq!(step_figures(&p)["model"]["requests"], 3, "five texts, two a request");
    let user = seen.bodies.lock().unwrap()[0]["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    let items: Vec<Value> = serde_json::from_str(user.as_str().unwrap()).unwrap();
    assert_eq!((items.len(), items[0]["id"].as_u64()), (2, Some(1)), "{items:?}");
}

#[test]
fn a_template_reads_several_columns_and_a_timeout_is_retried_then_dead_lettered() {
    let (url, seen) = scripted_server();
    let csv = "id,line1,town\n1,1 A St,Oslo\n2,SLOW,\n";
    let p = project(
        &url,
        "      template: \"{line1}|{town}||NO\"\n      timeout: 1s\n      retry: { max_attempts: 2, delay: 10ms }",
        csv,
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/parsed.csv"), "id,street,city,zip,country\n1,1 A St,Oslo,,NO\n");
    let letters = p.dlq("p.yaml");
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert!(letters[0]["error"].as_str().unwrap().contains("timed out"), "{letters:#?}");
    assert_eq!(letters[0]["record"]["line1"], "SLOW");
    assert_eq!(seen.texts(), ["1 A St|Oslo||NO", "SLOW|||NO", "SLOW|||NO"], "the timeout was tried twice");
}

#[test]
fn a_dry_run_prints_the_first_requests_and_asks_nothing() {
    let (url, seen) = scripted_server();
    let p = project(&url, "      text: address", "id,address\n1,1 A St|Oslo||NO\n2,2 B St|Leeds||GB\n");
    let log = p.ok_log(&["run", "p.yaml", "--dry-run"]);
    assert!(log.contains("Dry run: would send") && log.contains(r#""content": "1 A St|Oslo||NO""#), "{log}");
    assert!(log.contains(r#""model": "scripted""#), "{log}");
    assert!(!log.contains("sk-test-secret"), "{log}");
    assert!(seen.texts().is_empty(), "a dry run calls nothing");
}

#[test]
fn with_on_error_fail_a_misfit_stops_the_run_naming_the_step_and_the_record() {
    let (url, _seen) = scripted_server();
    let p = project(&url, "      text: address", "id,address\n1,1 A St|Oslo||NO\n2,MARS\n");
    p.file("p.yaml", &p.read("p.yaml").replace("    on_error: dead_letter\n", ""));
    let failed = p.fails(&["run", "p.yaml"], 2);
    assert!(
        failed.contains("step `parsed`") && failed.contains("not one of") && failed.contains(r#""id":2"#),
        "{failed}"
    );
    assert!(!p.path().join("out/parsed.csv").exists(), "nothing loaded");
}

#[test]
fn validate_catches_a_step_without_text_or_fields_and_a_connection_of_another_kind() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: bad\nconnections:\n  api: { kind: http, url: \"http://127.0.0.1:1\" }\nsteps:\n  raw:\n    read_csv: { path: raw.csv }\n  parsed:\n    ai_extract: { input: raw, connection: api }\n",
    );
    let out = p.fails(&["validate", "p.yaml"], 1);
    assert!(out.contains("ai_extract needs an `openai` connection"), "{out}");
    assert!(out.contains("exactly one of `text` and `template`"), "{out}");
    assert!(out.contains("needs `fields` (or `json_schema`)"), "{out}");
}

/// The spec's address example against a real local model. A model this small gets parts of addresses wrong, so
/// the test holds the plumbing to account, not the model: every row is loaded with an answer that fits the fields
/// or dead-lettered with the reason, tokens are counted, and a second run takes every answer from the kept ones.
#[test]
fn the_address_example_runs_against_a_local_model() {
    let model = crate::common::local_model::LocalModel::start();
    let p = Project::example("addresses").env("MODEL_URL", &model.url);
    p.ok(&["run", "pipeline.yaml"]);
    let out = p.read("out/addresses.csv");
    let loaded: Vec<&str> = out.lines().skip(1).collect();
    let letters = p.dlq("pipeline.yaml");
    assert_eq!(loaded.len() + letters.len(), 6, "every row loaded or set aside:\n{out}\n{letters:#?}");
    assert_eq!(out.lines().next(), Some("customer_id,name,raw_address,street,city,state,zip,country"));
    for letter in &letters {
        assert!(letter["error"].as_str().unwrap().contains("the model answered"), "{letter}");
    }
    let runs: Value = serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let steps: Vec<Value> = serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--run", &id, "--json"])).unwrap();
    let usage = &steps.iter().find(|s| s["step"] == "addresses").unwrap()["model"];
    assert_eq!(usage["requests"], 6, "{usage}");
    assert!(
        usage["input_tokens"].as_u64().unwrap() > 6 * 50 && usage["output_tokens"].as_u64().unwrap() > 6 * 10,
        "{usage}"
    );

    std::fs::remove_file(p.path().join("out/addresses.csv")).unwrap();
    let log = p.ok_log(&["run", "pipeline.yaml"]);
    assert!(
        log.contains(&format!(
            "Asked the model {} times ({} texts answered from the cache)",
            letters.len(),
            loaded.len()
        )),
        "{log}"
    );
    let again = p.read("out/addresses.csv");
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let kept: Vec<String> = sorted(&again).into_iter().filter(|l| sorted(&out).contains(l)).collect();
    assert_eq!(kept.len(), loaded.len() + 1, "the kept answers come back as they were:\n{out}\n{again}");
}

#[test]
fn kept_answers_live_in_a_shared_postgresql_state_too() {
    let db = crate::common::postgres::TestDb::new();
    let (url, seen) = scripted_server();
    let csv = "id,address\n1,1 A St|Oslo||NO\n2,2 B St|Leeds||GB\n";
    let p = project(&url, "      text: address", csv).env("WEIR_STATE", &db.url());
    p.ok(&["run", "p.yaml"]);
    p.ok(&["run", "p.yaml"]);
    assert_eq!(seen.texts().len(), 2, "the second run asked nothing: {:?}", seen.texts());
    assert_eq!(step_figures(&p)["model"]["cached"], 2);
    assert_eq!(db.rows("SELECT count(*) FROM weir.model_answers"), ["2"]);
}
