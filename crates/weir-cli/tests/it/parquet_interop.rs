//! What `write_parquet` writes, read back by the tools Weir's users read it with: pyarrow and DuckDB (Python),
//! which see Parquet's own logical types rather than the Arrow schema Weir embeds.

use std::process::Command;

use crate::common::Project;

/// For each column of the Parquet file at `path`: `name|pyarrow type|pyarrow value|DuckDB type|DuckDB value`.
fn read_back(path: &std::path::Path) -> Vec<String> {
    const SCRIPT: &str = r#"
import sys, duckdb, pyarrow.parquet as pq
path = sys.argv[1]
table = pq.read_table(path)
con = duckdb.connect()
types = {name: ty for name, ty, *_ in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()}
row = con.execute("SELECT * FROM read_parquet(?)", [path]).fetchone()
def value(scalar):
    try:
        return scalar.as_py()
    except ValueError:  # nanoseconds, which Python's datetime cannot hold
        return scalar.value
for i, field in enumerate(table.schema):
    print(f"{field.name}|{field.type}|{value(table.column(i)[0])}|{types[field.name]}|{row[i]}")
"#;
    let out = Command::new("python3").args(["-c", SCRIPT]).arg(path).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn timestamps_inferred_from_a_csv_are_parquet_timestamps() {
    let p = Project::new();
    p.file("data/events.csv", "id,at\n1,2024-01-15T10:30:00\n").file(
        "p.yaml",
        "name: p\nsteps:\n  events:\n    read_csv: { path: data/events.csv }\n  out:\n    write_parquet: { input: events, path: out/events.parquet }\n",
    );
    p.ok(&["run", "p.yaml"]);
    let columns = read_back(&p.path().join("out/events.parquet"));
    assert_eq!(columns[1], "at|timestamp[ms]|2024-01-15 10:30:00|TIMESTAMP|2024-01-15 10:30:00", "{columns:?}");
}

#[test]
fn every_type_weir_writes_reads_back_with_its_type_in_pyarrow_and_duckdb() {
    let p = Project::new();
    let query = [
        "arrow_cast('2024-01-15T10:30:00', 'Timestamp(Second, None)') AS ts_s",
        "arrow_cast('2024-01-15T10:30:00.123', 'Timestamp(Millisecond, None)') AS ts_ms",
        "arrow_cast('2024-01-15T10:30:00.123456', 'Timestamp(Microsecond, None)') AS ts_us",
        "arrow_cast('2024-01-15T10:30:00.123456789', 'Timestamp(Nanosecond, None)') AS ts_ns",
        "arrow_cast('2024-01-15T10:30:00Z', 'Timestamp(Second, Some(\"UTC\"))') AS tz_s",
        "arrow_cast('2024-01-15T10:30:00.123Z', 'Timestamp(Millisecond, Some(\"UTC\"))') AS tz_ms",
        "arrow_cast('2024-01-15T10:30:00.123456Z', 'Timestamp(Microsecond, Some(\"UTC\"))') AS tz_us",
        "arrow_cast('2024-01-15T10:30:00.123456789Z', 'Timestamp(Nanosecond, Some(\"UTC\"))') AS tz_ns",
        "arrow_cast('10:30:00.123', 'Time32(Millisecond)') AS t_ms",
        "arrow_cast('10:30:00.123456789', 'Time64(Nanosecond)') AS t_ns",
        "arrow_cast('2024-01-15', 'Date32') AS d32",
        "arrow_cast(arrow_cast('2024-01-15', 'Date32'), 'Date64') AS d64",
        "arrow_cast('10:30:00', 'Time32(Second)') AS t_s",
        "arrow_cast('10:30:00.123456', 'Time64(Microsecond)') AS t_us",
        "CAST(12.34 AS DECIMAL(12, 2)) AS dec",
        "make_array(1, 2, 3) AS list",
        "named_struct('a', 1, 'b', 'x') AS obj",
        "arrow_cast('abc', 'Binary') AS bin",
        "true AS flag",
        "arrow_cast(7, 'UInt64') AS u64",
    ]
    .join(", ");
    p.file("data/one.csv", "id\n1\n").file(
        "p.yaml",
        &format!(
            "name: p\nsteps:\n  one:\n    read_csv: {{ path: data/one.csv }}\n  typed:\n    sql: {{ query: \"SELECT {} FROM one\" }}\n  out:\n    write_parquet: {{ input: typed, path: out/types.parquet }}\n",
            query.replace('"', "\\\"")
        ),
    );
    p.ok(&["run", "p.yaml"]);
    let columns = read_back(&p.path().join("out/types.parquet"));
    let expected = [
        "ts_s|timestamp[ms]|2024-01-15 10:30:00|TIMESTAMP|2024-01-15 10:30:00",
        "ts_ms|timestamp[ms]|2024-01-15 10:30:00.123000|TIMESTAMP|2024-01-15 10:30:00.123000",
        "ts_us|timestamp[us]|2024-01-15 10:30:00.123456|TIMESTAMP|2024-01-15 10:30:00.123456",
        "ts_ns|timestamp[ns]|1705314600123456789|TIMESTAMP_NS|2024-01-15 10:30:00.123456",
        "tz_s|timestamp[ms, tz=UTC]|2024-01-15 10:30:00+00:00|TIMESTAMP WITH TIME ZONE|2024-01-15 10:30:00+00:00",
        "tz_ms|timestamp[ms, tz=UTC]|2024-01-15 10:30:00.123000+00:00|TIMESTAMP WITH TIME ZONE|2024-01-15 10:30:00.123000+00:00",
        "tz_us|timestamp[us, tz=UTC]|2024-01-15 10:30:00.123456+00:00|TIMESTAMP WITH TIME ZONE|2024-01-15 10:30:00.123456+00:00",
        "tz_ns|timestamp[ns, tz=UTC]|1705314600123456789|TIMESTAMPTZ_NS|2024-01-15 10:30:00.123456+00:00",
        "t_ms|time32[ms]|10:30:00.123000|TIME|10:30:00.123000",
        "t_ns|time64[ns]|37800123456789|TIME_NS|10:30:00.123456",
        "d32|date32[day]|2024-01-15|DATE|2024-01-15",
        "d64|date32[day]|2024-01-15|DATE|2024-01-15",
        "t_s|time32[ms]|10:30:00|TIME|10:30:00",
        "t_us|time64[us]|10:30:00.123456|TIME|10:30:00.123456",
        "dec|decimal128(12, 2)|12.34|DECIMAL(12,2)|12.34",
        "list|list<item: int64>|[1, 2, 3]|BIGINT[]|[1, 2, 3]",
        "obj|struct<a: int64, b: string>|{'a': 1, 'b': 'x'}|STRUCT(a BIGINT, b VARCHAR)|{'a': 1, 'b': 'x'}",
        "bin|binary|b'abc'|BLOB|b'abc'",
        "flag|bool|True|BOOLEAN|True",
        "u64|uint64|7|UBIGINT|7",
    ];
    assert_eq!(columns, expected);
}
