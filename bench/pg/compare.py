"""PostgreSQL -> PostgreSQL upsert of N rows (half update existing rows, half are new), in Weir, the psql COPY
floor, Sling and dlt, one after the other in one run against the local server. Each starts from the same target
table; each result is checked (row count and sum of amounts). Then Weir's incremental run with 10,000 changed
rows, against its full run.

    python3 bench/pg/compare.py --rows 10000000
    python3 bench/pg/compare.py --rows 10000000 --only weir floor --baseline /path/to/older/weir   # before/after
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from timing import measure  # noqa: E402
HERE = ROOT / "bench" / "pg"
SERVER = "postgresql://postgres@127.0.0.1:5432"
DB = "weir_bench_upsert"
URL = f"{SERVER}/{DB}"
COLUMNS = "id, customer_id, amount, status, note, updated_at"
# The statement Weir runs after staging, so the floor does the same work.
MERGE = (
    f"INSERT INTO dst_orders AS t ({COLUMNS}) SELECT {COLUMNS} FROM stage ON CONFLICT (id) DO UPDATE SET "
    "customer_id = EXCLUDED.customer_id, amount = EXCLUDED.amount, status = EXCLUDED.status, note = EXCLUDED.note, "
    "updated_at = EXCLUDED.updated_at WHERE (t.customer_id, t.amount, t.status, t.note, t.updated_at) IS DISTINCT FROM "
    "(EXCLUDED.customer_id, EXCLUDED.amount, EXCLUDED.status, EXCLUDED.note, EXCLUDED.updated_at)"
)


def sling_binary():
    """The binary the pip package `sling-linux-amd64` ships (the `sling` package downloads one at run time)."""
    import sling_linux_amd64

    return str(Path(sling_linux_amd64.__file__).parent / "bin" / "sling-linux-amd64")


def psql(sql, db=DB):
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr}\n{sql}")
    return out.stdout.strip()


def setup(rows):
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    psql(f"""
        CREATE TABLE src_orders (id bigint PRIMARY KEY, customer_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                                 status text NOT NULL, note text, updated_at timestamptz NOT NULL);
        INSERT INTO src_orders SELECT i, i % 100000, (i % 100000) / 100.0 + 1, (ARRAY['paid','refunded','pending'])[i % 3 + 1],
               CASE WHEN i % 10 = 0 THEN NULL ELSE 'note ' || i END, '2024-01-01'::timestamptz + i * interval '1 second'
        FROM generate_series(1, {rows}) i;
        CREATE INDEX ON src_orders (updated_at);
        CREATE TABLE dst_template AS SELECT id, customer_id, amount + 1 AS amount, 'stale'::text AS status, note,
               updated_at - interval '1 day' AS updated_at FROM src_orders WHERE id % 2 = 0;
        ANALYZE;""")


def reset_target():
    psql(f"""DROP TABLE IF EXISTS dst_orders; DROP SCHEMA IF EXISTS dlt_bench CASCADE;
        CREATE TABLE dst_orders (id bigint PRIMARY KEY, customer_id integer NOT NULL, amount numeric(12,2) NOT NULL,
                                 status text NOT NULL, note text, updated_at timestamptz NOT NULL);
        INSERT INTO dst_orders SELECT * FROM dst_template;
        CREATE SCHEMA dlt_bench; CREATE TABLE dlt_bench.dst_orders (LIKE dst_orders INCLUDING ALL);
        INSERT INTO dlt_bench.dst_orders SELECT * FROM dst_template;""")
    for statement in ["VACUUM ANALYZE dst_orders", "VACUUM ANALYZE dlt_bench.dst_orders", "CHECKPOINT"]:
        psql(statement)


def check(name, table, expected):
    got = psql(f"SELECT count(*), sum(amount), count(*) FILTER (WHERE status = 'stale') FROM {table}")
    if got != expected:
        sys.exit(f"{name}: target holds {got}, expected {expected}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--weir", default=os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir"))
    ap.add_argument("--only", nargs="*", help="run only these tools (weir floor sling dlt)")
    ap.add_argument("--baseline", help="another Weir binary (an earlier build) to run first, as `weir-baseline`")
    args = ap.parse_args()
    print(f"setting up {args.rows:,} source rows and a target holding every other id (stale)", flush=True)
    setup(args.rows)
    expected = psql("SELECT count(*), sum(amount), 0 FROM src_orders")
    work = Path(tempfile.mkdtemp(prefix="weir-bench-pg-"))
    env = dict(os.environ, BENCH_DB_URL=URL, WEIR_STATE_DIR=str(work / "weir-state"))
    sling_env = dict(os.environ, BENCH_PG=f"{URL}?sslmode=disable", SLING_HOME_DIR=str(work / "sling"), SLING_DISABLE_TELEMETRY="true")
    floor = ["bash", "-c",
             f"psql -h 127.0.0.1 -U postgres -d {DB} -Atqc \"COPY (SELECT {COLUMNS} FROM src_orders) TO STDOUT (FORMAT binary)\" | "
             f"psql -h 127.0.0.1 -U postgres -d {DB} -q -v ON_ERROR_STOP=1 -1 "
             f"-c \"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {COLUMNS} FROM dst_orders WITH NO DATA\" "
             f"-c \"COPY stage FROM STDIN (FORMAT binary)\" -c \"{MERGE}\""]
    baseline = {}
    if args.baseline:
        baseline_env = dict(env, WEIR_STATE_DIR=str(work / "weir-baseline-state"))
        baseline["weir-baseline"] = ([args.baseline, "-q", "run", str(HERE / "upsert.yaml")], baseline_env, "dst_orders")
    tools = {
        **baseline,
        "weir": ([args.weir, "-q", "run", str(HERE / "upsert.yaml")], env, "dst_orders"),
        "floor": (floor, None, "dst_orders"),
        "sling": ([sling_binary() if not args.only or "sling" in args.only else "sling", "run", "--src-conn", "BENCH_PG", "--src-stream", "public.src_orders", "--tgt-conn", "BENCH_PG",
                   "--tgt-object", "public.dst_orders", "--mode", "incremental", "--primary-key", "id"], sling_env, "dst_orders"),
        # dlt's PostgreSQL destination insists on a password; the server trusts 127.0.0.1 and ignores it.
        "dlt": ([sys.executable, str(HERE / "dlt_job.py"), URL.replace("postgres@", "postgres:unused@"), str(work / "dlt")],
                None, "dlt_bench.dst_orders"),
    }
    results = {}
    for name, (cmd, tool_env, table) in tools.items():
        if args.only and name not in args.only and name != "weir-baseline":
            continue
        reset_target()
        wall, rss = measure(name, cmd, tool_env)
        check(name, table, expected)
        results[name] = (wall, rss)
        print(f"{name:<13} {wall:8.2f} s  {args.rows / wall:>12,.0f} rows/s  {rss:8.0f} MiB peak RSS", flush=True)

    if "weir" in results:
        print("\nWeir's ratio to each (wall time; below 1 is faster):")
        for name, (wall, _) in results.items():
            if name != "weir":
                print(f"  weir / {name:<13} {results['weir'][0] / wall:6.2f}")

        reset_target()
        full, _ = measure("weir incremental (first, full)", [args.weir, "-q", "run", str(HERE / "incremental.yaml")], env)
        step = max(1, args.rows // 10_000)
        psql(f"UPDATE src_orders SET amount = amount + 1, updated_at = now() WHERE id % {step} = 0")
        changed, _ = measure("weir incremental (10,000 changed)", [args.weir, "-q", "run", str(HERE / "incremental.yaml")], env)
        check("weir incremental", "dst_orders", psql("SELECT count(*), sum(amount), 0 FROM src_orders"))
        print(f"\nincremental: full run {full:.2f} s, 10,000 changed rows {changed:.2f} s ({100 * changed / full:.2f}% of full)")
    shutil.rmtree(work, ignore_errors=True)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    main()
