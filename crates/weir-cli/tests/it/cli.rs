//! End-to-end tests of the `weir` binary: every example runs with asserted output, and every kind of bad input
//! gives a clear error that names the pipeline, step and file/line, losing nothing.

use std::process::Command;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::common::{Project, parquet_rows};

#[test]
fn example_orders_main_job() {
    let p = Project::example("orders");
    p.ok(&["run", "pipeline.yaml"]);
    let mut rows: Vec<String> =
        parquet_rows(p.path().join("out/monthly_spend.parquet")).into_iter().filter(|l| l.starts_with("| 1")).collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            "| 10          | 2024-01-01T00:00:00 | 55.0        | 2           | 27.5            |",
            "| 11          | 2024-01-01T00:00:00 | 12.5        | 1           | 12.5            |",
            "| 11          | 2024-02-01T00:00:00 | 7.5         | 1           | 7.5             |",
            "| 12          | 2024-02-01T00:00:00 | 40.0        | 1           | 40.0            |",
        ]
    );
    let dlq = p.dlq("pipeline.yaml");
    let got: Vec<(&str, &str)> =
        dlq.iter().map(|d| (d["step"].as_str().unwrap(), d["error"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("raw_orders", "column `amount`: `oops` is not Float64"),
            ("valid", "failed rules: email_format"),
            ("valid", "failed rules: amount_positive"),
        ]
    );
    assert!(dlq[0]["origin"].as_str().unwrap().ends_with("data/orders.csv:10"));
}

#[test]
fn example_mapping_cleaning() {
    let p = Project::example("mapping_cleaning");
    p.ok(&["run", "pipeline.yaml"]);
    assert_eq!(
        p.read("out/customers.csv"),
        "id,name,email,created_at,status\n\
         1,Ada Lovelace,ada@example.com,2024-01-15,active\n\
         2,Grace Hopper,grace@navy.mil,2024-02-01,inactive\n\
         3,Émile Zola,emile@example.fr,2023-12-31,unknown\n"
    );
}

#[test]
fn example_validation_routes_invalid_rows_with_every_reason() {
    let p = Project::example("validation");
    p.ok(&["run", "pipeline.yaml"]);
    let valid: Vec<serde_json::Value> =
        p.read("out/valid_payments.ndjson").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(valid.iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 5]);
    let dlq = p.dlq("pipeline.yaml");
    let reasons: Vec<(i64, &str)> =
        dlq.iter().map(|d| (d["record"]["id"].as_i64().unwrap(), d["error"].as_str().unwrap())).collect();
    assert_eq!(
        reasons,
        [
            (2, "failed rules: email_format"),
            (3, "failed rules: phone_format, amount_positive"),
            (4, "failed rules: required_fields"),
        ]
    );
    assert!(dlq.iter().all(|d| d["step"] == "checked" && d["retry_count"] == 0 && d["run_id"].is_string()));
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--json"])).unwrap();
    let m = &runs["metrics"][0];
    assert_eq!((m["records_extracted"].as_i64(), m["records_loaded"].as_i64()), (Some(5), Some(2)));
    assert_eq!((m["errors_count"].as_i64(), m["status"].as_str()), (Some(3), Some("success")));
}

#[test]
fn dlq_purge_deletes_what_it_is_told_and_nothing_else() {
    let p = Project::example("validation");
    p.ok(&["run", "pipeline.yaml"]);
    p.ok(&["run", "pipeline.yaml"]);
    assert_eq!(p.dlq("pipeline.yaml").len(), 6, "three per run");
    let err = p.fails(&["dlq", "purge", "pipeline.yaml"], 2);
    assert!(err.contains("--all"), "{err}");
    let first_id = p.dlq("pipeline.yaml")[0]["id"].as_i64().unwrap().to_string();
    assert!(p.ok(&["dlq", "purge", "pipeline.yaml", "--id", &first_id]).contains("purged 1 dead letters"));
    assert!(p.ok(&["dlq", "purge", "pipeline.yaml", "--step", "elsewhere"]).contains("purged 0 dead letters"));
    let run = p.dlq("pipeline.yaml").last().unwrap()["run_id"].as_str().unwrap().to_string();
    assert!(p.ok(&["dlq", "purge", "pipeline.yaml", "--run", &run]).contains("purged 3 dead letters"));
    assert_eq!(p.dlq("pipeline.yaml").len(), 2);
    assert!(p.ok(&["dlq", "purge", "pipeline.yaml", "--all"]).contains("purged 2 dead letters"));
    assert!(p.dlq("pipeline.yaml").is_empty());
}

#[test]
fn validation_over_budget_fails_and_loads_nothing() {
    let p = Project::example("validation");
    let yaml = p.read("pipeline.yaml").replace("max_invalid: \"75%\"", "max_invalid: 2");
    p.file("pipeline.yaml", &yaml);
    let err = p.fails(&["run", "pipeline.yaml"], 2);
    assert!(err.contains("pipeline `validation`, step `checked`: more than 2 invalid rows"), "{err}");
    assert!(!p.path().join("out/valid_payments.ndjson").exists());
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join("out")).map(|d| d.count()).into_iter().collect();
    assert!(leftovers.iter().all(|n| *n == 0), "temporary files left behind");
}

#[test]
fn example_deduplication_keeps_most_recent_per_email() {
    let p = Project::example("deduplication");
    p.ok(&["run", "pipeline.yaml"]);
    let out = p.read("out/users.csv");
    let mut lines: Vec<&str> = out.lines().skip(1).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "2024-01-02T09:00:00,bob@example.com,2,free",
            "2024-02-10T12:30:00,cy@example.com,5,free",
            "2024-03-01T09:00:00,ada@example.com,3,pro",
        ]
    );
}

#[test]
fn example_sql_monthly_spend_binds_variables() {
    let p = Project::example("sql_monthly_spend");
    p.ok(&["run", "pipeline.yaml"]);
    let rows = parquet_rows(p.path().join("out/monthly_spend.parquet"));
    let body: Vec<&str> = rows.iter().map(String::as_str).filter(|l| l.starts_with("| 1")).collect();
    assert_eq!(
        body,
        [
            "| 10          | 2024-01-01T00:00:00 | 50.0        | 2           | 25.0            |",
            "| 10          | 2024-02-01T00:00:00 | 100.0       | 1           | 100.0           |",
            "| 11          | 2024-01-01T00:00:00 | 12.5        | 1           | 12.5            |",
            "| 11          | 2024-02-01T00:00:00 | 10.0        | 2           | 5.0             |",
        ]
    );
    p.ok(&["run", "pipeline.yaml", "--var", "since=2024-02-01"]);
    let rows = parquet_rows(p.path().join("out/monthly_spend.parquet"));
    assert_eq!(rows.iter().filter(|l| l.starts_with("| 1")).count(), 2);
    let bad = p.fails(&["run", "pipeline.yaml", "--var", "since=last week"], 2);
    assert!(bad.contains("--var since: `last week` is not a date"), "{bad}");
    let unknown = p.fails(&["run", "pipeline.yaml", "--var", "sinse=2024-01-01"], 2);
    assert!(unknown.contains("`--var sinse=…` names no variable; declared: since"), "{unknown}");
}

#[test]
fn example_fan_out_fan_in_reads_each_source_once() {
    let p = Project::example("fan_out_fan_in");
    p.ok(&["run", "pipeline.yaml"]);
    assert_eq!(
        p.read("out/finance/orders.csv"),
        "order_id,customer,amount,source\n100,ada,10.0,web\n101,bob,25.0,web\n102,cy,7.25,web\n103,dee,40.0,store\n"
    );
    assert_eq!(parquet_rows(p.path().join("out/warehouse/orders.parquet")).len(), 4 + 4);
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--json"])).unwrap();
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let steps: Vec<serde_json::Value> =
        serde_json::from_str(&p.ok(&["runs", "pipeline.yaml", "--run", &run_id, "--json"])).unwrap();
    let rows_out = |id: &str| steps.iter().find(|s| s["step"] == id).unwrap()["rows_out"].as_u64().unwrap();
    // Read by two loads, `merged` ran once: its sources were counted once, not twice.
    assert_eq!((rows_out("web_orders"), rows_out("store_orders"), rows_out("merged")), (3, 2, 4));
    assert_eq!((rows_out("warehouse"), rows_out("finance")), (4, 4));
}

#[test]
fn fan_out_of_a_validating_step_dead_letters_once() {
    let p = Project::new();
    p.file("data/x.csv", "id,amount\n1,5\n2,-1\n3,7\n").file(
        "p.yaml",
        "name: once\nsteps:\n  x:\n    read_csv: { path: data/x.csv }\n  ok:\n    validate: { input: x, rules: { pos: { positive: amount } } }\n  a:\n    write_csv: { input: ok, path: out/a.csv }\n  b:\n    write_json: { input: ok, path: out/b.ndjson }\n",
    );
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("`ok` has 2 readers: streamed to all of them at once"), "{log}");
    assert_eq!(p.dlq("p.yaml").len(), 1);
    assert_eq!(p.read("out/a.csv"), "id,amount\n1,5\n3,7\n");
    assert_eq!(p.read("out/b.ndjson"), "{\"id\":1,\"amount\":5}\n{\"id\":3,\"amount\":7}\n");

    // Checked, the step is read once more after the loads: it is written to scratch instead, and still runs once.
    let checked = p.read("p.yaml") + "checks:\n  some: { step: ok, min_rows: 1 }\n";
    p.file("p.yaml", &checked);
    let log = p.ok_log(&["run", "p.yaml"]);
    assert!(log.contains("`ok` has 3 readers, one outside the loads: written to scratch once"), "{log}");
    assert_eq!(p.dlq("p.yaml").len(), 2, "one more dead letter for the second run, not two");
}

fn validate_messages(p: &Project, yaml: &str) -> String {
    p.file("p.yaml", yaml);
    p.fails(&["validate", "p.yaml"], 1)
}

#[test]
fn validate_points_at_line_and_column() {
    let p = Project::new();
    p.file("d.csv", "a,b\n1,2\n");
    let base = "name: v\nsteps:\n  src:\n    read_csv: { path: d.csv }\n";

    let out = validate_messages(&p, &format!("{base}  t:\n    reed_csv: {{ path: d.csv }}\n"));
    assert!(out.contains("p.yaml:6:5: unknown step kind `reed_csv`"), "{out}");

    let out = validate_messages(&p, &format!("{base}  t:\n    filter: {{ input: src, wher: a > 1 }}\n"));
    assert!(out.contains("p.yaml:6:") && out.contains("unknown field `wher`"), "{out}");

    let out = validate_messages(&p, &format!("{base}  t:\n    filter: {{ input: scr, where: a > 1 }}\n"));
    assert!(out.contains("p.yaml:6:22: unknown step `scr`") && out.contains("did you mean `src`?"), "{out}");

    let out = validate_messages(
        &p,
        &format!(
            "{base}  a:\n    filter: {{ input: b, where: a > 1 }}\n  b:\n    filter: {{ input: a, where: a > 1 }}\n"
        ),
    );
    assert!(out.contains("steps form a cycle: a -> b -> a"), "{out}");

    let out = validate_messages(
        &p,
        "name: v\nconnections:\n  db: { kind: postgres, url: 'postgres://u:${WEIR_TEST_UNSET_PW}@h/db' }\nsteps:\n  src:\n    read_csv: { path: d.csv }\n",
    );
    assert!(out.contains("p.yaml:3:30: connection `db` needs environment variable `WEIR_TEST_UNSET_PW`"), "{out}");

    let out = validate_messages(&p, &format!("variables:\n  n: {{ type: integer, default: ten }}\n{base}"));
    assert!(out.contains("p.yaml:2:32: default of variable `n`: `ten` is not an integer"), "{out}");

    let out = validate_messages(&p, &format!("{base}  q:\n    sql: {{ query: 'SELEC a FROM src' }}\n"));
    assert!(out.contains("p.yaml:6:19: step `q`: SQL does not parse"), "{out}");

    let out = validate_messages(&p, &format!("{base}  q:\n    sql: {{ query: 'SELECT nope FROM src' }}\n"));
    assert!(out.contains("p.yaml:6:5: step `q`:") && out.contains("nope"), "{out}");

    let out = validate_messages(&p, &format!("{base}  q:\n    sql: {{ query: 'SELECT a FROM scr' }}\n"));
    assert!(out.contains("unknown step `scr`"), "{out}");

    p.file("p.yaml", &format!("{base}  out:\n    write_csv: {{ input: src, path: o.csv }}\n"));
    assert!(p.ok(&["validate", "p.yaml"]).contains("p.yaml: ok"));
}

const BAD_ROWS: &str = "id,name,amount\n1,ada,10\n2,bob,20,extra\n3,cy,not-a-number\n4,dee,40\n";

fn bad_rows_pipeline(on_error: &str) -> String {
    format!(
        "name: bad_rows\nsteps:\n  src:\n    on_error: {on_error}\n    read_csv:\n      path: data/in.csv\n      schema: {{ id: bigint, name: text, amount: double }}\n  out:\n    write_csv: {{ input: src, path: out/o.csv }}\n"
    )
}

#[test]
fn malformed_csv_row_fails_with_file_and_line() {
    let p = Project::new();
    p.file("data/in.csv", BAD_ROWS).file("p.yaml", &bad_rows_pipeline("fail"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("pipeline `bad_rows`, step `src`: expected 3 fields, found 4 at "), "{err}");
    assert!(err.contains("data/in.csv:3"), "{err}");
    assert!(!p.path().join("out/o.csv").exists(), "a failed run left output");
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "p.yaml", "--json"])).unwrap();
    assert_eq!((runs["runs"][0]["status"].as_str(), runs["runs"][0]["stage"].as_str()), (Some("failed"), Some("src")));
}

#[test]
fn malformed_csv_rows_go_to_the_dead_letter_store() {
    let p = Project::new();
    p.file("data/in.csv", BAD_ROWS).file("p.yaml", &bad_rows_pipeline("dead_letter"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,name,amount\n1,ada,10.0\n4,dee,40.0\n");
    let dlq = p.dlq("p.yaml");
    assert_eq!(dlq.len(), 2);
    assert!(dlq[0]["origin"].as_str().unwrap().ends_with("data/in.csv:3"));
    assert_eq!(dlq[0]["error"], "expected 3 fields, found 4");
    assert_eq!(dlq[0]["record"]["fields"], serde_json::json!(["2", "bob", "20", "extra"]));
    assert!(dlq[1]["origin"].as_str().unwrap().ends_with("data/in.csv:4"));
    assert_eq!(dlq[1]["error"], "column `amount`: `not-a-number` is not Float64");
    assert_eq!(dlq[1]["record"]["name"], "cy");

    let show = p.ok(&["dlq", "show", "p.yaml", &dlq[1]["id"].to_string()]);
    assert!(show.contains("not-a-number"));
}

#[test]
fn type_mismatch_names_column_value_and_line() {
    let p = Project::new();
    p.file("data/in.csv", "id,amount\n1,5\n2,five\n").file(
        "p.yaml",
        "name: types\nsteps:\n  src:\n    read_csv: { path: data/in.csv, schema: { id: bigint, amount: bigint } }\n  out:\n    write_csv: { input: src, path: o.csv }\n",
    );
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("step `src`: column `amount`: `five` is not Int64 at ") && err.contains("in.csv:3"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let p = Project::new();
    p.file("p.yaml", "name: missing\nsteps:\n  src:\n    read_csv: { path: data/nope.csv }\n  out:\n    write_csv: { input: src, path: o.csv }\n");
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains("pipeline `missing`, step `src`: no such file or directory:") && err.contains("data/nope.csv"),
        "{err}"
    );
}

#[test]
fn empty_input_writes_an_empty_but_readable_output() {
    let p = Project::new();
    p.file("data/in.csv", "id,amount\n").file(
        "p.yaml",
        "name: empty\nsteps:\n  src:\n    read_csv: { path: data/in.csv, schema: { id: bigint, amount: double } }\n  pq:\n    write_parquet: { input: src, path: out/o.parquet }\n  csv:\n    write_csv: { input: src, path: out/o.csv }\n",
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,amount\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (columns, count) = rt.block_on(async {
        let ctx = SessionContext::new();
        let path = p.path().join("out/o.parquet");
        let df = ctx.read_parquet(path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        (columns, df.count().await.unwrap())
    });
    assert_eq!((columns, count), (vec!["id".to_string(), "amount".to_string()], 0));
}

#[test]
fn unicode_heavy_input_round_trips() {
    let p = Project::new();
    let text = "id,name,city\n1,\"Zoë, the 🦀\",Zürich\n2,李小龙,香港\n3,\"Ωμέγα \"\"quoted\"\"\",Αθήνα\n";
    p.file("data/in.csv", text).file(
        "p.yaml",
        "name: unicode\nsteps:\n  src:\n    read_csv: { path: data/in.csv }\n  up:\n    map: { input: src, columns: { id: id, name: upper(name), city: city } }\n  out:\n    write_csv: { input: up, path: out/o.csv }\n",
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(
        p.read("out/o.csv"),
        "id,name,city\n1,\"ZOË, THE 🦀\",Zürich\n2,李小龙,香港\n3,\"ΩΜΈΓΑ \"\"QUOTED\"\"\",Αθήνα\n"
    );
}

#[test]
fn state_advances_only_when_the_run_succeeds() {
    let p = Project::new();
    p.file("data/in.csv", "id,updated_at\n1,2024-01-01T00:00:00\n2,2024-01-05T00:00:00\n").file(
        "p.yaml",
        "name: incr\nstate:\n  cursor: { type: timestamp, default: '1970-01-01T00:00:00Z', update: { max: changed.updated_at } }\nsteps:\n  src:\n    read_csv: { path: data/in.csv }\n  changed:\n    filter: { input: src, where: updated_at > $cursor }\n  out:\n    write_csv: { input: changed, path: out/o.csv, mode: append }\n",
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.ok(&["state", "get", "p.yaml"]).trim(), "cursor = 2024-01-05T00:00:00");
    // Nothing new: nothing loaded, cursor unchanged.
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.ok(&["state", "get", "p.yaml"]).trim(), "cursor = 2024-01-05T00:00:00");
    // A failing run reads new rows but must not move the cursor past them.
    p.file("data/in.csv", "id,updated_at\n3,2024-02-01T00:00:00\n4,oops\n");
    p.file(
        "p.yaml",
        &p.read("p.yaml").replace(
            "read_csv: { path: data/in.csv }",
            "read_csv: { path: data/in.csv, schema: { id: bigint, updated_at: timestamp } }",
        ),
    );
    p.fails(&["run", "p.yaml"], 2);
    assert_eq!(p.ok(&["state", "get", "p.yaml"]).trim(), "cursor = 2024-01-05T00:00:00");
    let files = std::fs::read_dir(p.path().join("out/o.csv")).unwrap().count();
    assert_eq!(files, 1, "append wrote one file per successful run with rows");
    p.ok(&["state", "reset", "p.yaml"]);
    assert!(p.ok(&["state", "get", "p.yaml"]).contains("(default)"));
}

#[test]
fn failed_run_leaves_previous_output_untouched() {
    let p = Project::new();
    p.file("data/in.csv", "id\n1\n2\n").file(
        "p.yaml",
        "name: atomic\nsteps:\n  src:\n    read_csv: { path: data/in.csv, schema: { id: bigint } }\n  out:\n    write_csv: { input: src, path: out/o.csv }\n",
    );
    p.ok(&["run", "p.yaml"]);
    p.file("data/in.csv", "id\n3\nbad\n");
    p.fails(&["run", "p.yaml"], 2);
    assert_eq!(p.read("out/o.csv"), "id\n1\n2\n");
    assert_eq!(std::fs::read_dir(p.path().join("out")).unwrap().count(), 1, "no temporary file left");
}

#[test]
fn init_scaffolds_a_project_that_runs() {
    let p = Project::new();
    p.ok(&["init", "demo"]);
    p.ok(&["validate", "demo/pipeline.yaml"]);
    p.ok(&["run", "demo/pipeline.yaml", "--memory-limit", "64MB"]);
    assert!(p.path().join("demo/out/orders.parquet").exists());
    assert!(p.ok(&["explain", "demo/pipeline.yaml"]).contains("Load `out` (write_parquet) reads `big_enough`"));
    let schema: serde_json::Value = serde_json::from_str(&p.ok(&["schema"])).unwrap();
    assert!(schema["properties"]["steps"].is_object());
    assert!(p.ok(&["list"]).contains("read_csv"));
    assert!(p.ok(&["test", "demo"]).contains("1 cases: 1 passed, 0 failed"), "the scaffold's own test passes");
}

#[test]
fn gzip_csv_glob_and_hive_partitions() {
    let p = Project::new();
    for (day, rows) in [("2024-01-01", "id\n1\n2\n"), ("2024-01-02", "id\n3\n")] {
        let file = format!("data/day={day}/part.csv");
        p.file(&file, rows);
        let status = Command::new("gzip").arg(p.path().join(&file)).status().expect("gzip runs");
        assert!(status.success());
    }
    p.file(
        "p.yaml",
        "name: hive\nsteps:\n  src:\n    read_csv: { path: 'data/**/*.csv.gz', hive_partitioning: true }\n  agg:\n    sql: { query: 'SELECT day, count(*) AS n FROM src GROUP BY day ORDER BY day' }\n  out:\n    write_csv: { input: agg, path: out/o.csv }\n",
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "day,n\n2024-01-01,2\n2024-01-02,1\n");
}

#[test]
fn large_csv_files_are_read_in_chunks_without_losing_or_doubling_rows() {
    let p = Project::new();
    let mut text = String::from("id,name,amount\n");
    for i in 1..=2000 {
        match i {
            777 => text.push_str("777,\"quoted, comma\",x\n"),
            1999 => text.push_str("1999,short\n"),
            _ => text.push_str(&format!("{i},\"name {i}\",{}.5\n", i % 97)),
        }
    }
    p.file("data/in.csv", &text).file(
        "p.yaml",
        "name: chunks\nsteps:\n  src:\n    on_error: dead_letter\n    read_csv: { path: data/in.csv, schema: { id: bigint, name: text, amount: double } }\n  agg:\n    sql: { query: 'SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS s FROM src' }\n  out:\n    write_csv: { input: agg, path: out/o.csv }\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "p.yaml"])
        .current_dir(p.path())
        .env("WEIR_CSV_CHUNK_BYTES", "1000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected_sum: i64 = (1..=2000).filter(|i| *i != 777 && *i != 1999).sum();
    assert_eq!(p.read("out/o.csv"), format!("n,ids,s\n1998,1998,{expected_sum}\n"));
    let mut origins: Vec<String> = p.dlq("p.yaml").iter().map(|d| d["origin"].as_str().unwrap().to_string()).collect();
    origins.sort_by_key(|o| o.rsplit(':').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(origins.len(), 2);
    assert!(origins[0].ends_with("data/in.csv:778") && origins[1].ends_with("data/in.csv:2000"), "{origins:?}");
}

#[test]
fn json_arrays_nested_objects_flatten_and_partitioned_parquet_round_trip() {
    let p = Project::new();
    p.file(
        "data/events.json",
        r#"[
          {"id": 1, "user": {"name": "ada", "geo": {"country": "UK"}}, "kind": "click"},
          {"id": 2, "user": {"name": "bob", "geo": {"country": "US"}}, "kind": "view"},
          {"id": 3, "user": {"name": "cy", "geo": {"country": "UK"}}, "kind": "click"}
        ]"#,
    )
    .file(
        "p.yaml",
        r#"name: nested
steps:
  events:
    read_json: { path: data/events.json, flatten: true }
  out:
    write_parquet: { input: events, path: lake/events/, partition_by: [kind] }
  nested:
    read_json: { path: data/events.json }
  names:
    sql: { query: "SELECT id, get_field(\"user\", 'name') AS name FROM nested ORDER BY id" }
  names_out:
    write_csv: { input: names, path: out/names.csv }
"#,
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/names.csv"), "id,name\n1,ada\n2,bob\n3,cy\n");
    assert!(p.path().join("lake/events/kind=click").is_dir() && p.path().join("lake/events/kind=view").is_dir());

    // Read the partitioned Parquet back with Hive partitions: flattened columns and the partition column survive.
    p.file(
        "back.yaml",
        r#"name: back
steps:
  lake:
    read_parquet: { path: lake/events, hive_partitioning: true }
  agg:
    sql: { query: 'SELECT kind, count(*) AS n, min("user.geo.country") AS c FROM lake GROUP BY kind ORDER BY kind' }
  out:
    write_csv: { input: agg, path: out/agg.csv }
"#,
    );
    p.ok(&["run", "back.yaml"]);
    assert_eq!(p.read("out/agg.csv"), "kind,n,c\nclick,2,UK\nview,1,US\n");
}

#[test]
fn json_logs_carry_the_seed_monitoring_lines() {
    let p = Project::example("mapping_cleaning");
    let out = p.weir(&["--log-format", "json", "run", "pipeline.yaml"]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(messages.contains(&"Extracted 3 records"), "{messages:?}");
    assert!(messages.contains(&"Load complete: 3 inserted, 0 updated"), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("Pipeline finished in ")), "{messages:?}");
    let finished =
        events.iter().find(|e| e["message"].as_str().is_some_and(|m| m.starts_with("Pipeline finished"))).unwrap();
    assert_eq!(finished["pipeline"], "mapping_cleaning");
}

#[test]
fn invalid_utf8_and_custom_null_markers() {
    let p = Project::new();
    let mut bytes = b"id,name\n1,ok\n2,".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"\n3,NA\n4,\n");
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/in.csv"), bytes).unwrap();
    p.file(
        "p.yaml",
        "name: utf8\nsteps:\n  src:\n    on_error: dead_letter\n    read_csv: { path: data/in.csv, null_values: ['NA', ''], schema: { id: bigint, name: text } }\n  counted:\n    sql: { query: 'SELECT count(*) AS n, count(name) AS named FROM src' }\n  out:\n    write_csv: { input: counted, path: o.csv }\n",
    );
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("o.csv"), "n,named\n3,1\n");
    let dlq = p.dlq("p.yaml");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["error"], "the record is not valid UTF-8");
    assert!(dlq[0]["origin"].as_str().unwrap().ends_with("data/in.csv:3"));
}

#[test]
fn dedup_keeps_first_or_last_in_order() {
    let p = Project::new();
    p.file("data/in.csv", "k,v,t\na,1,3\na,2,1\na,3,2\nb,4,1\nc,5,\nc,6,1\n");
    // One integer ordering column goes through Weir's own aggregate; `t, k` (the same order, as k is the key) through
    // DataFusion's first_value: both must agree, NULLs last ascending and first descending.
    let ascending = [("first", "k,v\na,2\nb,4\nc,6\n"), ("last", "k,v\na,1\nb,4\nc,5\n")];
    let descending = [("first", "k,v\na,1\nb,4\nc,5\n"), ("last", "k,v\na,2\nb,4\nc,6\n")];
    for (order_by, cases) in [("t", ascending), ("t, k", ascending), ("t DESC", descending), ("t DESC, k", descending)]
    {
        for (keep, expected) in cases {
            p.file(
                "p.yaml",
                &format!(
                    "name: keep\nsteps:\n  src:\n    read_csv: {{ path: data/in.csv }}\n  d:\n    dedup: {{ input: src, keys: [k], order_by: \"{order_by}\", keep: {keep} }}\n  s:\n    sql: {{ query: 'SELECT k, v FROM d ORDER BY k' }}\n  out:\n    write_csv: {{ input: s, path: o.csv }}\n"
                ),
            );
            assert_eq!(p.ok(&["explain", "p.yaml"]).contains("pick_"), !order_by.contains(','), "order_by: {order_by}");
            p.ok(&["run", "p.yaml"]);
            assert_eq!(p.read("o.csv"), expected, "order_by: {order_by}, keep: {keep}");
        }
    }
    // Dates rank too (as days).
    p.file("data/in.csv", "k,v,t\na,1,2024-01-03\na,2,2024-01-01\nb,3,2024-02-01\n");
    p.file(
        "p.yaml",
        "name: keep\nsteps:\n  src:\n    read_csv: { path: data/in.csv, schema: { k: text, v: bigint, t: date } }\n  d:\n    dedup: { input: src, keys: [k], order_by: t DESC }\n  s:\n    sql: { query: 'SELECT k, v FROM d ORDER BY k' }\n  out:\n    write_csv: { input: s, path: o.csv }\n",
    );
    assert!(p.ok(&["explain", "p.yaml"]).contains("pick_desc_nulls_first(src.v"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("o.csv"), "k,v\na,1\nb,3\n");
}

#[test]
fn backfill_runs_once_per_day_and_leaves_state_alone() {
    let p = Project::new();
    p.file("data/events.csv", "day,n\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n2024-01-03,4\n2024-01-04,5\n");
    p.file(
        "daily.yaml",
        "name: daily\nvariables:\n  day: { type: date, default: \"2024-01-01\" }\nstate:\n  last_run: { type: timestamp, default: \"1970-01-01T00:00:00Z\", update: run_started_at }\nsteps:\n  events:\n    read_csv: { path: data/events.csv, schema: { day: date, n: bigint } }\n  that_day:\n    filter: { input: events, where: \"day = $day\" }\n  out:\n    write_csv: { input: that_day, path: \"out/{{ var.day }}.csv\" }\n",
    );
    let log = p.ok_log(&["backfill", "daily.yaml", "--var", "day", "--from", "2024-01-02", "--to", "2024-01-03"]);
    assert!(log.contains("backfilled 2 values of day"), "{log}");
    assert_eq!(p.read("out/2024-01-02.csv"), "day,n\n2024-01-02,2\n2024-01-02,3\n");
    assert_eq!(p.read("out/2024-01-03.csv"), "day,n\n2024-01-03,4\n");
    assert!(!p.path().join("out/2024-01-01.csv").exists() && !p.path().join("out/2024-01-04.csv").exists());
    assert!(p.ok(&["state", "get", "daily.yaml"]).trim().ends_with("(default)"), "state did not move");
    let runs: serde_json::Value = serde_json::from_str(&p.ok(&["runs", "daily.yaml", "--json"])).unwrap();
    assert!(runs["runs"].as_array().unwrap().iter().all(|r| r["trigger"] == "backfill" && r["status"] == "success"));
    let id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let detail = p.ok(&["runs", "daily.yaml", "--run", &id, "--logs"]);
    assert!(
        detail.contains("INFO  Extracted 5 records") && detail.contains("Pipeline finished in"),
        "the run's own log: {detail}"
    );
    let wrong = p.fails(&["backfill", "daily.yaml", "--var", "day", "--from", "2024-01-05", "--to", "2024-01-01"], 2);
    assert!(wrong.contains("--from 2024-01-05 is after --to 2024-01-01"), "{wrong}");
}

#[test]
fn dead_letters_kept_in_ndjson_files_list_replay_and_purge_like_the_embedded_store() {
    let p = Project::new();
    p.file("data/orders.csv", "id,amount\n1,10\n2,-5\n3,0\n4,7\n");
    let pipeline = |rule: &str| {
        format!(
            "name: orders\nsettings: {{ dead_letters: {{ path: dlq }} }}\nsteps:\n  rows:\n    read_csv: {{ path: data/orders.csv }}\n  \
             checked:\n    validate: {{ input: rows, rules: {{ {rule} }} }}\n  out:\n    write_csv: {{ input: checked, path: out/orders.csv, mode: append }}\n"
        )
    };
    p.file("p.yaml", &pipeline("ok: { positive: amount }"));
    p.ok(&["run", "p.yaml"]);
    let file = p.read("dlq/orders.ndjson");
    assert_eq!(file.lines().count(), 2, "{file}");
    assert!(file.contains(r#""record":{"amount":-5,"id":2}"#) && file.contains("failed rules: ok"), "{file}");
    let listed = p.dlq("p.yaml");
    assert_eq!(listed.iter().map(|l| l["id"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert!(p.ok(&["dlq", "show", "p.yaml", "2"]).contains(r#""amount": 0"#));

    // Zero is fine now: order 3 goes through and leaves the file; order 2 stays with one more retry.
    p.file("p.yaml", &pipeline("ok: { expr: \"amount >= 0\" }"));
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("1 went through and were removed, 1 failed again"), "{log}");
    let left = p.dlq("p.yaml");
    assert_eq!(
        (left.len(), left[0]["record"]["id"].as_i64(), left[0]["retry_count"].as_i64()),
        (1, Some(2), Some(1)),
        "{left:?}"
    );
    assert!(p.read("dlq/orders.ndjson").contains(r#""retry_count":1"#));
    assert!(p.ok(&["dlq", "purge", "p.yaml", "--all"]).contains("purged 1"));
    assert_eq!(p.read("dlq/orders.ndjson"), "");
}

#[test]
fn a_webhook_run_resumes_only_with_its_payload() {
    let p = Project::new();
    p.file("p.yaml", "name: hook\nsteps:\n  events:\n    read_webhook: { records: $.events, schema: { id: bigint } }\n  out:\n    write_csv: { input: events, path: out.csv }\n");
    p.file("bad.json", r#"{"events": [{"id": 1}, {"id": "x"}]}"#);
    let failed = p.fails(&["run", "p.yaml", "--payload", "bad.json"], 2);
    assert!(
        failed.contains("pipeline `hook`, step `events`: field `id` is a string (\"x\"), where the column is Int64 at record 2 of the request"),
        "{failed}"
    );
    let refused = p.fails(&["run", "p.yaml", "--resume"], 2);
    assert!(refused.contains("whose records are not kept"), "{refused}");
    p.file("good.json", r#"{"events": [{"id": 1}, {"id": 2}]}"#);
    p.ok(&["run", "p.yaml", "--resume", "--payload", "good.json"]);
    assert_eq!(p.read("out.csv"), "id\n1\n2\n");
}

#[test]
fn rows_a_map_fails_on_go_to_the_dead_letters_and_the_rest_go_on() {
    let p = Project::new();
    p.file(
        "data/in.csv",
        "id,day,qty\n1,2024-01-05,3\n2,not a date,4\n3,2024-02-30,5\n4,2024-03-01,99999999999\n5,2024-03-02,6\n",
    );
    let pipeline = |on_error: &str| {
        format!(
            "name: typed\nsteps:\n  src:\n    read_csv: {{ path: data/in.csv, schema: {{ id: bigint, day: text, qty: bigint }} }}\n  typed:\n    on_error: {on_error}\n    \
             map: {{ input: src, columns: {{ id: id, day: to_date(day), qty: CAST(qty AS INT) }} }}\n  out:\n    write_csv: {{ input: typed, path: out/o.csv }}\n"
        )
    };
    p.file("p.yaml", &pipeline("fail"));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains("step `typed`"), "{err}");

    p.file("p.yaml", &pipeline("dead_letter"));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.read("out/o.csv"), "id,day,qty\n1,2024-01-05,3\n5,2024-03-02,6\n");
    let letters = p.dlq("p.yaml");
    let set_aside: Vec<(i64, &str)> =
        letters.iter().map(|l| (l["record"]["id"].as_i64().unwrap(), l["error"].as_str().unwrap())).collect();
    assert_eq!(set_aside.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2, 3, 4], "{set_aside:?}");
    assert!(set_aside[0].1.starts_with("`day`: ") && set_aside[2].1.starts_with("`qty`: "), "{set_aside:?}");
    assert_eq!(letters[0]["record"]["day"], "not a date", "the row as the map was given it");

    // The map learns to keep what it cannot read as NULL; the replay sends the three rows through it again.
    p.file(
        "p.yaml",
        &pipeline("dead_letter")
            .replace("to_date(day)", "TRY_CAST(day AS DATE)")
            .replace("CAST(qty AS INT)", "TRY_CAST(qty AS INT)"),
    );
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("3 went through and were removed, 0 failed again"), "{log}");
    assert_eq!(p.read("out/o.csv"), "id,day,qty\n2,,4\n3,,5\n4,2024-03-01,\n");
    assert!(p.dlq("p.yaml").is_empty());
}

#[test]
fn replay_leaves_alone_the_dead_letters_of_a_failed_run_whose_input_was_read_again() {
    let p = Project::new();
    p.file("data/in.csv", "id,amount\n1,10\n2,-5\n3,-7\n");
    let pipeline = |rule: &str, max_invalid: u32| {
        format!(
            "name: checked\nsteps:\n  src:\n    read_csv: {{ path: data/in.csv }}\n  valid:\n    validate: {{ input: src, rules: {{ ok: {rule} }}, max_invalid: {max_invalid} }}\n  \
             out:\n    write_csv: {{ input: valid, path: out/o.csv }}\n"
        )
    };
    p.file("p.yaml", &pipeline("{ positive: amount }", 1));
    p.fails(&["run", "p.yaml"], 2);
    p.file("p.yaml", &pipeline("{ positive: amount }", 5));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(p.dlq("p.yaml").len(), 4, "each run set rows 2 and 3 aside");

    p.file("p.yaml", &pipeline("{ expr: \"amount > -100\" }", 5));
    let log = p.ok_log(&["dlq", "replay", "p.yaml"]);
    assert!(log.contains("2 dead letters of `valid` are of runs that failed and were left alone"), "{log}");
    assert!(log.contains("2 went through and were removed"), "{log}");
    assert_eq!(p.read("out/o.csv"), "id,amount\n2,-5\n3,-7\n", "each set-aside row loaded once");
    let left = p.dlq("p.yaml");
    assert_eq!(left.len(), 2);
    let failed_run = left[0]["run_id"].as_str().unwrap().to_string();
    p.ok(&["dlq", "purge", "p.yaml", "--run", &failed_run]);
    assert!(p.dlq("p.yaml").is_empty());
}
