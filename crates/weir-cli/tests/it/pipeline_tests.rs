//! `weir test`: pipelines' own test cases, run as a user runs them.

use crate::common::Project;
use crate::common::postgres::TestDb;

const PIPELINE: &str = "\
name: signups
connections:
  warehouse: { kind: sqlite, url: sqlite://warehouse.db }
steps:
  users:
    read_csv: { path: data/users.csv }
  checked:
    validate:
      input: users
      rules:
        email_format: { regex: { column: email, pattern: '^[^@]+@[^@]+$' } }
  load:
    write_db: { input: checked, connection: warehouse, table: users, mode: upsert, keys: [id] }
checks:
  enough:
    step: checked
    min_rows: 2
";

/// The project every test here starts from: the pipeline above, and `cases` as its test file.
fn project(cases: &str) -> Project {
    let p = Project::new();
    p.file("signups.yaml", PIPELINE);
    p.file("signups.test.yaml", cases);
    p
}

#[test]
fn a_wrong_expectation_names_the_case_the_step_and_the_rows_and_update_rewrites_it() {
    let p = project(
        "cases:\n  bad emails are set aside:\n    given:\n      users:\n        rows:\n          - { id: 1, email: a@x.io }\n          - { id: 2, email: b@x.io }\n          - { id: 3, email: nope }\n    expect:\n      steps:\n        load:\n          rows:\n            - { id: 1, email: a@x.io }\n            - { id: 2, email: B@x.io }\n      dead_letters: [{ step: checked, reason: email_format, record: { id: 3 } }]\n      checks: { enough: passed }\n",
    );
    let out = p.fails(&["test", ".", "--junit", "report.xml"], 1);
    assert!(out.contains("FAILED  ./signups.test.yaml: bad emails are set aside"), "{out}");
    assert!(out.contains("step `load`: expected 2 rows, got 2"), "{out}");
    assert!(out.contains(r#"{"id":2,"email":"B@x.io"} | {"id":2,"email":"b@x.io"}"#), "{out}");
    assert!(out.contains("1 cases: 0 passed, 1 failed"), "{out}");
    let report = p.read("report.xml");
    assert!(report.contains(r#"failures="1""#) && report.contains("bad emails are set aside"), "{report}");

    let out = p.ok(&["test", "signups.test.yaml", "--update"]);
    assert!(out.contains("updated 1 expected rows in signups.test.yaml"), "{out}");
    let rewritten = p.read("signups.test.yaml");
    assert!(rewritten.contains(r#"            - {"id":2,"email":"b@x.io"}"#), "{rewritten}");
    assert!(rewritten.contains("dead_letters: [{ step: checked"), "the rest stays as written:\n{rewritten}");
    let out = p.ok(&["test", "."]);
    assert!(out.contains("1 cases: 1 passed, 0 failed"), "{out}");
}

#[test]
fn expected_errors_state_checks_and_dead_letters_are_compared() {
    let p = project(
        "cases:\n  too few rows fail the check and load nothing:\n    given:\n      users: { rows: [{ id: 1, email: a@x.io }, { id: 2, email: nope }] }\n    expect:\n      error: enough\n      checks: { enough: failed }\n      steps:\n        load: { count: 0 }\n  wrong on every count:\n    given:\n      users: { rows: [{ id: 1, email: a@x.io }, { id: 2, email: b@x.io }] }\n    expect:\n      error: something\n      checks: { enough: failed }\n      dead_letters: [{ step: checked }]\n",
    );
    let out = p.fails(&["test", "."], 1);
    assert!(out.contains("ok      ./signups.test.yaml: too few rows fail the check"), "{out}");
    for failure in [
        "the run succeeded, but it should have failed with `something`",
        "check `enough` should have failed",
        "no dead letter of step `checked`",
    ] {
        assert!(out.contains(failure), "missing `{failure}`:\n{out}");
    }
}

#[test]
fn a_case_that_cannot_run_exits_2_and_says_why() {
    let p = project("cases:\n  typo:\n    given:\n      userz: { rows: [{ id: 1 }] }\n");
    let out = p.fails(&["test", "."], 2);
    assert!(out.contains("`given.userz`: the pipeline has no extract step `userz`"), "{out}");
    let p = project("cases:\n  c:\n    given: { users: { rows: [], file: x.csv } }\n");
    let out = p.fails(&["test", "."], 2);
    assert!(out.contains("signups.test.yaml:2:3: case `c`: `given.users` needs exactly one of"), "{out}");
    let p = Project::new();
    p.file("signups.yaml", PIPELINE);
    let out = p.fails(&["test", "."], 2);
    assert!(out.contains("no test files"), "{out}");
}

#[test]
fn a_mocked_api_fails_the_case_on_a_request_it_did_not_expect() {
    let p = Project::new();
    p.file(
        "feed.yaml",
        "name: feed\nconnections:\n  api: { kind: http, url: https://api.example.com/v2 }\nsteps:\n  items:\n    read_api: { connection: api, url: /items, records: $.data, retry: { max_attempts: 2, delay: 10ms } }\n  out:\n    write_json: { input: items, path: out.ndjson }\n",
    );
    p.file(
        "feed.test.yaml",
        "cases:\n  retried then read:\n    given:\n      items:\n        responses:\n          - { status: 503 }\n          - { path: /v2/items, body: { data: [{ id: 1 }, { id: 2 }] } }\n    expect:\n      steps:\n        out: { rows: [{ id: 1 }, { id: 2 }] }\n  wrong path:\n    given:\n      items:\n        responses:\n          - { path: /v2/things, body: { data: [{ id: 1 }] } }\n          - { body: { data: [] } }\n",
    );
    let out = p.fails(&["test", "."], 1);
    assert!(out.contains("ok      ./feed.test.yaml: retried then read"), "{out}");
    assert!(out.contains("`items`'s API: request 1 (GET /v2/items) should have had path /v2/things"), "{out}");
    assert!(out.contains("1 of the 2 responses given were never asked for"), "{out}");
}

#[test]
fn a_real_sqlite_destination_keeps_earlier_runs_and_a_failed_run_rolls_back() {
    let p = project(
        "cases:\n  real warehouse:\n    connections:\n      warehouse: { url: \"sqlite://{{ test.dir }}/warehouse.db\" }\n    runs:\n      - given:\n          users: { rows: [{ id: 1, email: a@x.io }, { id: 2, email: b@x.io }] }\n        expect:\n          steps:\n            load: { rows: [{ id: 1, email: a@x.io }, { id: 2, email: b@x.io }] }\n      - given:\n          users: { rows: [{ id: 2, email: changed@x.io }, { id: 3, email: nope }] }\n        expect:\n          error: enough\n          steps:\n            load: { rows: [{ id: 1, email: a@x.io }, { id: 2, email: b@x.io }] }\n      - given:\n          users: { rows: [{ id: 2, email: changed@x.io }, { id: 3, email: c@x.io }] }\n        expect:\n          steps:\n            load:\n              rows: [{ id: 1, email: a@x.io }, { id: 2, email: changed@x.io }, { id: 3, email: c@x.io }]\n",
    );
    let out = p.ok(&["test", "."]);
    assert!(out.contains("1 cases: 1 passed"), "{out}");
    assert!(!p.path().join("warehouse.db").exists(), "the case's database is in its own directory");
}

#[test]
fn a_real_postgres_destination_is_read_back_after_each_run() {
    let db = TestDb::new();
    let p = project(&format!(
        "cases:\n  real warehouse:\n    connections:\n      warehouse: {{ url: \"{}\" }}\n    runs:\n      - given:\n          users: {{ rows: [{{ id: 1, email: a@x.io }}, {{ id: 2, email: b@x.io }}] }}\n        expect:\n          steps:\n            load: {{ count: 2 }}\n      - given:\n          users: {{ rows: [{{ id: 2, email: changed@x.io }}, {{ id: 3, email: c@x.io }}] }}\n        expect:\n          steps:\n            load: {{ rows: [{{ id: 1 }}, {{ id: 2, email: changed@x.io }}, {{ id: 3 }}] }}\n",
        db.url()
    ));
    p.file(
        "signups.yaml",
        &PIPELINE.replace("kind: sqlite, url: sqlite://warehouse.db", "kind: postgres, url: postgres://unused"),
    );
    let out = p.ok(&["test", "."]);
    assert!(out.contains("1 cases: 1 passed"), "{out}");
    assert_eq!(db.rows("SELECT id || ':' || email FROM users ORDER BY id"), ["1:a@x.io", "2:changed@x.io", "3:c@x.io"]);
}
