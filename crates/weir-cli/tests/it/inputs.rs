//! Files as real tools write them: JSON in every shape, JSON whose types drift, CSV with quoted empties and line
//! breaks, change events with tombstones, many tables into one SQLite file.

use std::process::Command;

use crate::common::Project;

/// `p.yaml`: `read_json` of `path` (with `options`) written to `out/o.csv`.
fn read_json(p: &Project, path: &str, options: &str) {
    p.file(
        "p.yaml",
        &format!(
            "name: j\nsteps:\n  docs:\n    read_json: {{ path: {path}{options} }}\n  out:\n    write_csv: {{ input: docs, path: out/o.csv }}\n"
        ),
    );
}

#[test]
fn json_documents_of_records_read_in_every_shape() {
    let p = Project::new();
    let pretty = "[\n  {\n    \"id\": 1,\n    \"tags\": {\n      \"a\": \"x\"\n    }\n  },\n  {\n    \"id\": 2,\n    \"tags\": {\n      \"a\": \"y, ]}\"\n    }\n  }\n]\n";
    p.file("array.json", pretty)
        .file(
            "objects.json",
            "{\n  \"id\": 1,\n  \"tags\": { \"a\": \"x\" }\n}\n{\n  \"id\": 2, \"tags\": { \"a\": \"y, ]}\" }\n}\n",
        )
        .file("bom.json", "\u{feff}{\"id\":1,\"tags\":{\"a\":\"x\"}}\n{\"id\":2,\"tags\":{\"a\":\"y, ]}\"}}\n")
        .file("compact.json", "[{\"id\":1,\"tags\":{\"a\":\"x\"}},{\"id\":2,\"tags\":{\"a\":\"y, ]}\"}}]")
        .file("packed/array.json", pretty)
        .file("packed/array2.json", pretty);
    assert!(Command::new("gzip").arg(p.path().join("packed/array.json")).status().unwrap().success());
    assert!(
        Command::new("zstd").args(["-q", "--rm"]).arg(p.path().join("packed/array2.json")).status().unwrap().success()
    );
    let expected = "id,tags.a\n1,x\n2,\"y, ]}\"\n";
    for file in
        ["array.json", "objects.json", "bom.json", "compact.json", "packed/array.json.gz", "packed/array2.json.zst"]
    {
        read_json(&p, file, ", flatten: true");
        p.ok(&["run", "p.yaml"]);
        assert_eq!(p.read("out/o.csv"), expected, "{file}");
    }
    p.file("one.json", "{\n  \"id\": 7,\n  \"name\": \"only\"\n}\n");
    read_json(&p, "one.json", "");
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,name\n7,only\n");
}

#[test]
fn a_json_document_that_is_not_records_or_is_cut_short_fails_naming_the_file() {
    let p = Project::new();
    let cases = [
        ("number.json", "42\n", "number.json:1: the document is a number, not records"),
        ("numbers.json", "[\n  1,\n  2\n]\n", "numbers.json:2: element 1 of the array is a number, not a record"),
        (
            "cut.json",
            "[\n  {\"id\": 1},\n  {\"id\": 2},\n",
            "cut.json:4: the document ends inside the array opened on line 1: it has no closing `]`",
        ),
    ];
    for (file, text, message) in cases {
        p.file(file, text);
        read_json(&p, file, ", schema: { id: bigint }");
        let err = p.fails(&["run", "p.yaml"], 2);
        assert!(err.contains(message), "{file}: {err}");
        assert!(!p.path().join("out/o.csv").exists(), "{file}: nothing is loaded");
    }
}

/// 1,500 records whose `a.n` is a number in the first 1,000 (what the types are inferred from) and a word in
/// record 1,200, on line 1,201 of the file.
fn drifting(p: &Project) {
    let mut text = String::new();
    for id in 1..=1500 {
        let n = if id == 1200 { "\"many\"".to_string() } else { id.to_string() };
        text.push_str(&format!("{{\"id\": {id}, \"a\": {{\"n\": {n}}}}}\n"));
    }
    p.file("drift.json", &text);
}

#[test]
fn a_json_record_whose_field_changes_type_goes_aside_with_its_line_or_fails_naming_it() {
    let p = Project::new();
    drifting(&p);
    read_json(&p, "drift.json", ", flatten: true");
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains("field `a.n` is a string (\"many\"), where the column is Int64")
            && err.contains("drift.json:1200"),
        "{err}"
    );
    p.file("p.yaml", &p.read("p.yaml").replace("  docs:\n", "  docs:\n    on_error: dead_letter\n"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv").lines().count(), 1 + 1499);
    let letters = p.dlq("p.yaml");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0]["origin"].as_str().unwrap().ends_with("drift.json:1200"), "{letters:?}");
    assert_eq!(letters[0]["record"]["a"]["n"], "many");
    assert!(letters[0]["error"].as_str().unwrap().contains("inferred from the first 1000 records"), "{letters:?}");
}

#[test]
fn an_api_record_whose_field_changes_type_goes_aside_with_its_page() {
    use axum::extract::Query;
    let router = axum::Router::new().route(
        "/items",
        axum::routing::get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
            let page: u32 = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let items: Vec<serde_json::Value> = match page {
                1 => (1..=3).map(|id| serde_json::json!({ "id": id, "n": id })).collect(),
                2 => vec![serde_json::json!({ "id": 4, "n": 4 }), serde_json::json!({ "id": 5, "n": [5] })],
                _ => vec![],
            };
            axum::Json(serde_json::json!({ "items": items }))
        }),
    );
    let addr = crate::common::serve(router);
    let p = Project::new();
    p.file(
        "p.yaml",
        &format!(
            "name: api\nsteps:\n  items:\n    on_error: dead_letter\n    read_api: {{ url: \"http://{addr}/items\", records: $.items, schema: {{ id: bigint, n: bigint }}, paginate: {{ page: {{ param: page }} }} }}\n  out:\n    write_csv: {{ input: items, path: out/o.csv }}\n"
        ),
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,n\n1,1\n2,2\n3,3\n4,4\n");
    let letters = p.dlq("p.yaml");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["origin"], "page 2, record 2", "{letters:?}");
    assert!(letters[0]["error"].as_str().unwrap().contains("field `n` is an array ([5])"), "{letters:?}");
}

#[test]
fn debezium_tombstones_are_skipped_and_change_columns_stay_out_of_the_table() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: cdc\nconnections:\n  db: { kind: sqlite, url: \"sqlite://cdc.db\" }\nsteps:\n  events:\n    read_webhook: { format: debezium, schema: { id: bigint, name: text } }\n  out:\n    write_db: { input: events, connection: db, table: people, mode: upsert, keys: [id], delete_when: _deleted }\n",
    );
    let event = |op: &str, before: &str, after: &str| {
        format!(r#"{{"payload": {{"op": "{op}", "before": {before}, "after": {after}}}}}"#)
    };
    let body = format!(
        "[{}, {}, {}, {}, null]",
        event("c", "null", r#"{"id": 1, "name": "a"}"#),
        event("c", "null", r#"{"id": 2, "name": "b"}"#),
        event("u", r#"{"id": 1, "name": "a"}"#, r#"{"id": 1, "name": "A"}"#),
        event("d", r#"{"id": 2, "name": "b"}"#, "null"),
    );
    p.file("events.json", &body);
    let log = p.ok_log(&["run", "p.yaml", "--payload", "events.json"]);
    assert!(log.contains("Skipped 1 tombstones"), "{log}");
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--json"])).unwrap();
    let id = runs["runs"][0]["run_id"].as_str().unwrap();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "p.yaml", "--run", id, "--json"])).unwrap();
    let events = steps.iter().find(|s| s["step"] == "events").unwrap();
    assert_eq!((events["rows_out"].as_u64(), events["rows_skipped"].as_u64()), (Some(4), Some(1)), "{events}");
    let db = rusqlite::Connection::open(p.path().join("cdc.db")).unwrap();
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('people')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(columns, ["id", "name"]);
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT id, name FROM people")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [(1, "A".to_string())]);
}

#[test]
fn a_webhook_record_that_does_not_fit_goes_aside_and_the_others_load() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: hook\nsteps:\n  events:\n    on_error: dead_letter\n    read_webhook: { records: $.events, schema: { id: bigint } }\n  out:\n    write_csv: { input: events, path: out.csv }\n",
    );
    p.file("body.json", r#"{"events": [{"id": 1}, {"id": "x"}, {"id": 3}]}"#);
    p.ok(&["run", "p.yaml", "--payload", "body.json"]);
    assert_eq!(p.read("out.csv"), "id\n1\n3\n");
    let letters = p.dlq("p.yaml");
    assert_eq!(letters[0]["origin"], "record 2 of the request", "{letters:?}");
}

#[test]
fn a_quoted_csv_value_is_kept_byte_for_byte_and_only_an_unquoted_empty_field_is_null() {
    let p = Project::new();
    p.file("data/q.csv", "id,v\n1,\"\"\n2,\n3,\"a\r\nb\"\n4,\"say \"\"hi\"\"\"\n");
    let pipeline = |options: &str| {
        format!(
            "name: q\nsteps:\n  q:\n    read_csv: {{ path: data/q.csv, schema: {{ id: bigint, v: text }}{options} }}\n  shown:\n    sql: {{ query: \"SELECT id, v IS NULL AS is_null, encode(v, 'hex') AS hex FROM q ORDER BY id\" }}\n  out:\n    write_csv: {{ input: shown, path: out/q.csv }}\n"
        )
    };
    p.file("p.yaml", &pipeline(", newlines_in_values: true"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/q.csv"), "id,is_null,hex\n1,false,\n2,true,\n3,false,610d0a62\n4,false,7361792022686922\n");
    p.file("p.yaml", &pipeline(", newlines_in_values: true, quoted_nulls: true"));
    p.ok(&["run", "p.yaml"]);
    assert!(p.read("out/q.csv").starts_with("id,is_null,hex\n1,true,\n2,true,\n"), "{}", p.read("out/q.csv"));
}

/// Twelve tables into one SQLite file in one run: all load, and commit together or not at all.
#[test]
fn many_tables_load_into_one_sqlite_file_all_or_nothing() {
    let p = Project::new();
    let mut yaml =
        String::from("name: many\nconnections:\n  dst: { kind: sqlite, url: \"sqlite://dst.db\" }\nsteps:\n");
    for t in 1..=12 {
        p.file(&format!("data/t{t}.csv"), &format!("id,v\n1,{t}\n2,{t}\n"));
        yaml.push_str(&format!(
            "  t{t}:\n    read_csv: {{ path: data/t{t}.csv }}\n  load_t{t}:\n    write_db: {{ input: t{t}, connection: dst, table: t{t}, mode: replace }}\n"
        ));
    }
    p.file("p.yaml", &yaml);
    p.ok(&["run", "p.yaml"]);
    let db = rusqlite::Connection::open(p.path().join("dst.db")).unwrap();
    let count = |db: &rusqlite::Connection, t: u32| -> i64 {
        db.query_row(&format!("SELECT count(*) FROM t{t}"), [], |r| r.get(0)).unwrap()
    };
    assert!((1..=12).all(|t| count(&db, t) == 2));

    // Table 12 refuses the next run's rows: none of the twelve loads commits.
    db.execute_batch("DROP TABLE t12; CREATE TABLE t12 (id INTEGER, v INTEGER CHECK (v < 0))").unwrap();
    for t in 1..=12 {
        p.file(&format!("data/t{t}.csv"), &format!("id,v\n1,{t}\n2,{t}\n3,{t}\n"));
    }
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("CHECK constraint failed"), "{err}");
    assert!((1..=11).all(|t| count(&db, t) == 2), "the first eleven kept the last run's rows");
    assert_eq!(count(&db, 12), 0);
}

#[test]
fn a_sqlite_file_another_process_locks_fails_fast_naming_it() {
    let p = Project::new();
    p.file("data/t.csv", "id\n1\n").file(
        "p.yaml",
        "name: locked\nconnections:\n  dst: { kind: sqlite, url: \"sqlite://dst.db\", options: { busy_timeout: 1s } }\nsteps:\n  t:\n    read_csv: { path: data/t.csv }\n  out:\n    write_db: { input: t, connection: dst, table: t }\n",
    );
    let other = rusqlite::Connection::open(p.path().join("dst.db")).unwrap();
    other.execute_batch("CREATE TABLE x (a); BEGIN IMMEDIATE; INSERT INTO x VALUES (1)").unwrap();
    let started = std::time::Instant::now();
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(err.contains("`dst` (") && err.contains("dst.db) is locked by another process: waited 1s"), "{err}");
    other.execute_batch("ROLLBACK").unwrap();
}
