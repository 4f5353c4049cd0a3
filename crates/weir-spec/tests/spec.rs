//! Parsing and checking pipeline files without an engine.

use weir_spec::{Dag, Environment, Pipeline, StepKind, check};

const GOOD: &str = r#"
name: good
variables:
  since: { type: date, default: "2024-01-01" }
state:
  cursor: { type: integer, default: 0, update: { max: orders.id } }
connections:
  db: { kind: postgres, url: "postgres://app:${DB_PASSWORD}@localhost/app" }
steps:
  orders:
    read_csv: { path: "data/{{ var.since }}/orders.csv" }
  recent:
    on_error: skip
    filter: { input: orders, where: "id > $cursor" }
  out:
    write_parquet: { input: recent, path: out/ }
"#;

fn diagnostics(yaml: &str) -> Vec<String> {
    match Pipeline::from_yaml_str(yaml) {
        Err(d) => vec![d.to_string()],
        Ok(p) => check(&p, &Environment::empty().with("DB_PASSWORD", "x")).iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn a_good_pipeline_parses_in_file_order_and_checks_clean() {
    let p = Pipeline::from_yaml_str(GOOD).unwrap();
    let ids: Vec<&str> = p.steps.iter().map(|s| s.id()).collect();
    assert_eq!(ids, ["orders", "recent", "out"]);
    assert!(matches!(p.step("recent").unwrap().kind, StepKind::Filter(_)));
    assert_eq!(p.step("recent").unwrap().on_error(), weir_spec::OnError::Skip);
    assert!(p.step("out").unwrap().kind.file_sink().unwrap().is_directory());
    assert_eq!(diagnostics(GOOD), Vec::<String>::new());
    let dag = Dag::build(&p, |_| Ok(vec![])).unwrap();
    assert_eq!(dag.order, ["orders", "recent", "out"]);
    assert_eq!(dag.readers()["orders"], 1);
}

#[test]
fn secrets_must_be_set_but_are_never_echoed() {
    let p = Pipeline::from_yaml_str(GOOD).unwrap();
    let found = check(&p, &Environment::empty());
    assert_eq!(found.len(), 1);
    let text = found[0].to_string();
    assert!(text.contains("<pipeline>:8:30:") && text.contains("`DB_PASSWORD`, which is not set"), "{text}");
    let with_secret = check(&p, &Environment::empty().with("DB_PASSWORD", "hunter2"));
    assert!(with_secret.iter().all(|d| !d.to_string().contains("hunter2")));
}

#[test]
fn every_mistake_is_reported_with_its_position() {
    let yaml = r#"
name: "bad name!"
variables:
  n: { type: integer, default: "x" }
state:
  n: { type: integer, default: 0, update: { max: nowhere.col } }
steps:
  1st:
    read_csv: { path: "{{ var.missing }}.csv" }
  v:
    validate: { input: 1st, rules: { r: { regex: { column: a, pattern: "(" } } } }
  d:
    dedup: { input: v, keys: [] }
  o:
    write_csv: { input: d, path: a.csv }
  o2:
    write_csv: { input: o, path: a.csv }
checks:
  c1: { step: nowhere, min_rows: 1 }
  c2: { step: d }
settings: { commit_every: 0 }
"#;
    let found = diagnostics(yaml);
    let expect = [
        ":2:7: pipeline name `bad name!`",
        ":4:32: default of variable `n`: `x` is not an integer",
        ":4:6: `n` is both a variable and a state value",
        ":6:50: state `n` takes its max from unknown step `nowhere`",
        ":8:3: step id `1st` is not a SQL identifier",
        ":9:23: `{{ var.missing }}` names no var",
        ":11:38: rule `r`: invalid regex: unclosed group",
        ":13:5: a dedup step needs at least one key column",
        ":17:25: `o` is a write_csv step; it has no output",
        ":17:34: two load steps write `a.csv`",
        ":19:15: check `c1` is on step `nowhere`, which does not exist",
        ":20:15: check `c2` checks nothing",
        "settings.commit_every must be at least 1 row",
    ];
    for e in expect {
        assert!(found.iter().any(|d| d.contains(e)), "missing `{e}` in:\n{}", found.join("\n"));
    }
}

#[test]
fn yaml_mistakes_point_at_line_and_column() {
    let unknown_kind = diagnostics("name: x\nsteps:\n  a:\n    read_cvs: { path: a.csv }\n");
    assert!(
        unknown_kind[0].contains(":4:") && unknown_kind[0].contains("unknown step kind `read_cvs`"),
        "{unknown_kind:?}"
    );
    let two_kinds =
        diagnostics("name: x\nsteps:\n  a:\n    read_csv: { path: a.csv }\n    sql: { query: 'select 1' }\n");
    assert!(two_kinds[0].contains("exactly one kind"), "{two_kinds:?}");
    let no_kind = diagnostics("name: x\nsteps:\n  a:\n    description: nothing\n");
    assert!(no_kind[0].contains("names no kind"), "{no_kind:?}");
    let unknown_field = diagnostics("name: x\nowner: me\nschedule: daily\nsteps: {}\n");
    assert!(
        unknown_field[0].contains(":3:1") && unknown_field[0].contains("unknown field `schedule`"),
        "{unknown_field:?}"
    );
    let duplicate =
        diagnostics("name: x\nsteps:\n  a:\n    read_csv: { path: a.csv }\n  a:\n    read_csv: { path: b.csv }\n");
    assert!(duplicate[0].to_lowercase().contains("duplicate"), "{duplicate:?}");
    let bad_budget = diagnostics(
        "name: x\nsteps:\n  a:\n    validate: { input: a, rules: { r: { expr: 'true' } }, max_invalid: lots }\n",
    );
    assert!(bad_budget[0].contains("percentage"), "{bad_budget:?}");
}

#[test]
fn cycles_are_named_in_order() {
    let yaml = "name: c\nsteps:\n  a:\n    map: { input: c, columns: { x: x } }\n  b:\n    map: { input: a, columns: { x: x } }\n  c:\n    map: { input: b, columns: { x: x } }\n";
    let p = Pipeline::from_yaml_str(yaml).unwrap();
    let err = Dag::build(&p, |_| Ok(vec![])).unwrap_err();
    assert!(err[0].to_string().contains("steps form a cycle: a -> c -> b -> a"), "{}", err[0]);
}

#[test]
fn the_json_schema_describes_every_step_kind() {
    let schema = weir_spec::json_schema(&[]);
    let text = schema.to_string();
    for (kind, ..) in weir_spec::STEP_KINDS {
        assert!(text.contains(&format!("\"{kind}\"")), "schema lacks {kind}");
    }
    assert_eq!(schema["required"], serde_json::json!(["name", "steps"]));
}

#[test]
fn delta_steps_are_checked_for_what_their_modes_need() {
    let found = diagnostics(
        "name: lake\nsteps:\n  t:\n    read_delta: { path: lake/t, version: 3, timestamp: \"2024-01-15\" }\n  up:\n    write_delta: { input: t, path: lake/u, mode: upsert }\n  over:\n    write_delta: { input: t, path: lake/o, mode: append, replace_where: \"day = 1\", delete_when: gone }\n  tidy:\n    maintain_delta: { path: lake/o }\n",
    );
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(
        found[0].starts_with("<pipeline>:4:5: a read_delta step takes at most one of `version`, `timestamp`"),
        "{found:#?}"
    );
    assert!(found[1].starts_with("<pipeline>:6:5: mode `upsert` needs `keys`"), "{found:#?}");
    assert!(found[2].starts_with("<pipeline>:8:5: `delete_when` works with `mode: upsert` only"), "{found:#?}");
    assert!(found[3].starts_with("<pipeline>:8:73: `replace_where` works with `mode: overwrite` only"), "{found:#?}");
    assert!(found[4].starts_with("<pipeline>:10:5: a maintain_delta step has nothing to do"), "{found:#?}");
}

#[test]
fn iceberg_steps_take_one_way_to_pick_a_snapshot_and_a_declared_catalog() {
    let found = diagnostics(
        "name: lake\nconnections:\n  cat: { kind: iceberg_rest, url: \"http://localhost:8181\" }\nsteps:\n  t:\n    read_iceberg: { catalog: cat, table: a.t, snapshot_id: 3, timestamp: \"2024-01-15\" }\n  out:\n    write_iceberg: { input: t, catalog: lake, table: a.u }\n",
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("<pipeline>:6:5: a read_iceberg step takes at most one of `snapshot_id` and `timestamp`"),
        "{found:#?}"
    );
    assert!(found[1].starts_with("<pipeline>:8:41: unknown connection `lake`"), "{found:#?}");

    let neither = diagnostics("name: lake\nsteps:\n  t:\n    read_iceberg: { table: a.t }\n");
    assert_eq!(neither.len(), 1, "{neither:#?}");
    assert!(neither[0].contains("needs `catalog` and `table`, or `metadata`"), "{neither:#?}");
}
