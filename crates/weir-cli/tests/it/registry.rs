//! The registry of connection kinds as users meet it: `weir list`, `weir validate` on connections, `weir schema`.

use crate::common::{Project, manifest_dir};

#[test]
fn list_shows_step_kinds_and_connection_kinds_with_what_this_build_has() {
    let out = Project::new().ok(&["list"]);
    let (steps, connections) = out.split_once("Connection kinds:").expect("two tables");
    assert!(steps.contains("load       write_db"), "{out}");
    let line = |kind: &str| {
        connections
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{kind} ")))
            .unwrap_or_else(|| panic!("no {kind}: {out}"))
    };
    assert!(line("postgres").contains("built") && line("postgres").contains("dead-letters, checkpoints"), "{out}");
    assert!(line("s3").contains("object store"), "{out}");
    let duckdb = line("duckdb");
    if cfg!(feature = "duckdb") {
        assert!(duckdb.contains("built"), "{duckdb}");
    } else {
        assert!(duckdb.contains("needs --features duckdb"), "{duckdb}");
    }
}

#[test]
fn misspelled_connection_options_and_kinds_are_pointed_at() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: typo\nconnections:\n  lake:\n    kind: s3\n    options:\n      endpiont: http://127.0.0.1:9000\n      allow_http: 'yes'\n      timeout: soon\n  db:\n    kind: postgress\n    url: postgres://x@127.0.0.1/db\n  files:\n    kind: sftp\n    url: sftp://x\n    options: { passwrd: x }\nsteps:\n  orders:\n    read_csv: { path: 's3://b/orders.csv', connection: lake }\n",
    );
    let out = p.fails(&["validate", "p.yaml"], 1);
    assert!(out.contains("p.yaml:6:7: connection `lake`: `s3` connections take no option `endpiont`"), "{out}");
    assert!(out.contains("did you mean `endpoint`?"), "{out}");
    assert!(out.contains("p.yaml:7:19: connection `lake`, option `allow_http`: `yes` is not a boolean"), "{out}");
    assert!(out.contains("p.yaml:8:16: connection `lake`, option `timeout`: `soon` is not a duration"), "{out}");
    assert!(
        out.contains("p.yaml:10:11: connection `db`: unknown kind `postgress`")
            && out.contains("did you mean `postgres`?"),
        "{out}"
    );
    assert!(out.contains("p.yaml:15:16: connection `files`: `sftp` connections take no option `passwrd`"), "{out}");
}

#[test]
fn options_object_store_aliases_and_environment_values_pass() {
    let p = Project::new();
    p.file(
        "p.yaml",
        "name: ok\nconnections:\n  lake:\n    kind: s3\n    options: { aws_endpoint: 'http://127.0.0.1:9', allow_http: 'true', timeout: '${WEIR_TEST_TIMEOUT}' }\nsteps:\n  orders:\n    read_csv: { path: 's3://b/orders.csv', connection: lake }\n",
    );
    let out = p.weir(&["validate", "p.yaml"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("take no option") && !text.contains("is not a"), "{text}");
}

#[test]
fn dead_letters_need_a_kind_that_can_hold_them() {
    let p = Project::new();
    p.file("d.csv", "a\n1\n");
    p.file(
        "p.yaml",
        "name: dl\nconnections:\n  ch: { kind: clickhouse, url: 'clickhouse://u@127.0.0.1:1/db' }\nsettings:\n  dead_letters: { connection: ch }\nsteps:\n  src:\n    read_csv: { path: d.csv }\n",
    );
    let out = p.fails(&["validate", "p.yaml"], 1);
    assert!(
        out.contains("`clickhouse` connections cannot hold dead letters") && out.contains("postgres, mysql, sqlite"),
        "{out}"
    );
}

#[test]
fn the_schema_documents_each_kinds_options() {
    let schema: serde_json::Value = serde_json::from_str(&Project::new().ok(&["schema"])).unwrap();
    let kinds = schema["$defs"]["Connection"]["oneOf"].as_array().expect("one schema per kind");
    let s3 = kinds.iter().find(|k| k["properties"]["kind"]["const"] == "s3").expect("s3");
    let endpoint = &s3["properties"]["options"]["properties"]["endpoint"]["description"];
    assert!(endpoint.as_str().unwrap().contains("S3-compatible"), "{endpoint}");
    assert_eq!(s3["properties"]["options"]["additionalProperties"], false);
    let postgres = kinds.iter().find(|k| k["properties"]["kind"]["const"] == "postgres").expect("postgres");
    assert_eq!(postgres["required"], serde_json::json!(["kind", "url"]));
}

/// `docs/pipeline.schema.json` is what editors point at; it must match what `weir schema` prints. `WEIR_BLESS=1`
/// rewrites it.
#[test]
fn the_published_schema_is_current() {
    let path = std::path::Path::new(&manifest_dir()).join("../../docs/pipeline.schema.json");
    let current = Project::new().ok(&["schema"]);
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(published == current, "docs/pipeline.schema.json is stale: run `weir schema > docs/pipeline.schema.json`");
}

/// `docs/test.schema.json`, for editors of `NAME.test.yaml` files, must match `weir schema --tests`. `WEIR_BLESS=1`
/// rewrites it.
#[test]
fn the_published_test_file_schema_is_current() {
    let path = std::path::Path::new(&manifest_dir()).join("../../docs/test.schema.json");
    let current = Project::new().ok(&["schema", "--tests"]);
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(published == current, "docs/test.schema.json is stale: run `weir schema --tests > docs/test.schema.json`");
    let schema: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert!(schema["$defs"]["Given"]["properties"]["responses"].is_object(), "{current}");
}

/// `docs/reference.md` is generated from the same types; it must be current too. `WEIR_BLESS=1` rewrites it.
#[test]
fn the_reference_is_current() {
    let path = std::path::Path::new(&manifest_dir()).join("../../docs/reference.md");
    let current = Project::new().ok(&["schema", "--markdown"]);
    assert!(
        current.contains("### `write_db` (load)") && current.contains("| `endpoint` (also `aws_endpoint`"),
        "{current}"
    );
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(published == current, "docs/reference.md is stale: run `weir schema --markdown > docs/reference.md`");
}
