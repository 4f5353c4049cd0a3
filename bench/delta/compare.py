"""The Delta Lake benchmark: the orders CSV written to a Delta table partitioned by month, then 1 million changed
and new orders merged into it by order id, in Weir, pip `deltalake` (the same Rust core, driven from Python) and
Polars (`write_delta`, on pip deltalake too), one after the other in one run; then one month of Weir's table read
back with a filter and an aggregate, by Weir and by DuckDB's `delta` extension. Every tool's table must hold the
same rows after each step, and both reads the same answer. Prints wall time, peak RSS and Weir's ratio.

    cargo build --release -p weir-cli
    python3 bench/delta/compare.py --rows 10000000 --changes 1000000 --memory-limit 512MB

DuckDB's extension comes from PyPI for one DuckDB release (scripts/test.sh installs both under
$WEIR_DUCKDB_DELTA); Polars from PyPI (`pip install polars`).
"""
import argparse
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
from gen_orders import orders_csv  # noqa: E402
from timing import measure  # noqa: E402

PEER = [sys.executable, str(BENCH / "peers/delta_job.py")]
DUCKDB_DELTA = os.environ.get("WEIR_DUCKDB_DELTA", "/var/tmp/weir-duckdb-delta/1.5.2")


def changes(path, rows, orders):
    """Half the changes update existing orders (every 10th id), half are new orders."""
    duckdb.sql(
        f"""
        COPY (
          SELECT CASE WHEN i % 2 = 0 THEN i * 10 ELSE {orders} + i END AS order_id,
                 hash(i) % 100000 AS customer_id,
                 'changed' || i || '@example.com' AS email,
                 round((hash(i * 13) % 100000) / 100.0 + 1, 2) AS amount,
                 'R' AS status,
                 DATE '2023-01-01' + CAST(hash(i * 17) % 730 AS INTEGER) AS order_date,
                 TIMESTAMP '2025-01-01 00:00:00' + to_seconds(i) AS updated_at
          FROM range(1, {rows} + 1) t(i)
        ) TO '{path}' (HEADER, DELIMITER ',')
        """
    )


def totals(lake):
    out = subprocess.run([*PEER, "duckdb", "totals", str(lake)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=DUCKDB_DELTA))
    return ast.literal_eval(out.stdout.strip())


def timed(name, cmd, env=None):
    wall, rss = measure(name, cmd, env)
    print(f"{name:<22} {wall:8.2f} s  {rss:8.0f} MiB peak RSS", flush=True)
    return wall, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--memory-limit", default="512MB")
    ap.add_argument("--weir", default=os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir"))
    ap.add_argument("--peers", default="deltalake,polars", help="comma-separated: deltalake, polars")
    args = ap.parse_args()

    orders = orders_csv(args.rows)
    data = orders.parent
    changed = data / f"changes-{args.changes}-of-{args.rows}.csv"
    if not changed.exists():
        changes(changed, args.changes, args.rows)
    out = BENCH / "out" / "delta"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def weir(job, lake, **variables):
        cmd = [args.weir, "-q", "run", str(BENCH / f"delta/{job}.yaml"), "--var", f"lake={lake}",
               "--memory-limit", args.memory_limit]
        for name, value in variables.items():
            cmd += ["--var", f"{name}={value}"]
        return cmd, dict(os.environ, WEIR_STATE_DIR=str(out / ".weir"))

    tools = ["weir", *[p for p in args.peers.split(",") if p]]
    results, written, merged = {}, {}, {}
    for tool in tools:
        lake = out / tool
        for job, source in (("write", orders), ("merge", changed)):
            if tool == "weir":
                cmd, env = weir(job, lake, input=source)
            else:
                cmd, env = [*PEER, tool, job, str(source), str(lake)], None
            results[(tool, job)] = timed(f"{tool} {job}", cmd, env)
            (written if job == "write" else merged)[tool] = totals(lake)

    cmd, env = weir("read", out / "weir", output=out / "weir-read.csv")
    results[("weir", "read")] = timed("weir read", cmd, env)
    results[("duckdb", "read")] = timed("duckdb read", [*PEER, "duckdb", "read", str(out / "weir"),
                                                        str(out / "duckdb-read.csv")],
                                        dict(os.environ, PYTHONPATH=DUCKDB_DELTA))

    print(f"\ninput: {args.rows:,} orders, {args.changes:,} changes; weir --memory-limit {args.memory_limit}")
    print("tables (rows, order ids, sum of amounts) after the write and after the merge:")
    for tool in tools:
        print(f"  {tool:<10} {written[tool]}  {merged[tool]}")
    reads = [(out / f"{t}-read.csv").read_text() for t in ("weir", "duckdb")]
    agree = len(set(written.values())) == 1 and len(set(merged.values())) == 1 and reads[0] == reads[1]
    print("results agree" if agree else "RESULTS DIFFER")

    print(f"\n{'job':<8}{'tool':<12}{'wall s':>9}{'peak MiB':>10}{'weir/peer time':>16}{'weir/peer mem':>15}")
    for (tool, job), (wall, rss) in results.items():
        w_wall, w_rss = results[("weir", job)]
        print(f"{job:<8}{tool:<12}{wall:>9.2f}{rss:>10.0f}{w_wall / wall:>16.2f}{w_rss / rss:>15.2f}")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
