"""Runs the orders job (examples/orders/pipeline.yaml) in Weir, DuckDB and Polars on the same generated CSV, one
after the other in one run, checks that all three produce the same totals, and prints wall time, peak memory and
Weir's ratio to each. Then the fan-out job (bench/orders/fanout.yaml: the same job with a second load, the
deduplicated orders themselves) in Weir and DuckDB (which also writes the rows that break a rule, Weir's dead
letters), checks both outputs agree, and prints Weir's fan-out time against its single-load time and DuckDB's.

    cargo build --release -p weir-cli
    python3 bench/compare.py --rows 10000000 --memory-limit 512MB
    python3 bench/compare.py --baseline /path/to/older/weir    # also an earlier build of Weir, for before/after

Wall time and peak RSS come from GNU time (`/usr/bin/time -f '%e %M'`) around each process.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "bench"))
from timing import measure  # noqa: E402


def totals(path):
    q = f"SELECT count(*), round(sum(total_spent), 2), sum(order_count) FROM read_parquet('{path}')"
    return duckdb.sql(q).fetchall()[0]


def latest_totals(path):
    q = f"SELECT count(*), count(DISTINCT order_id), round(sum(amount), 2), max(updated_at) FROM read_parquet('{path}')"
    return duckdb.sql(q).fetchall()[0]


def best_of(name, cmd, env, runs):
    best = None
    for _ in range(runs):
        wall, rss = measure(name, cmd, env)
        best = (wall, rss) if best is None or wall < best[0] else best
    print(f"{name:<21} {best[0]:8.2f} s  {best[1]:8.0f} MiB peak RSS", flush=True)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--memory-limit", default="512MB")
    ap.add_argument("--weir", default=os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir"))
    ap.add_argument("--runs", type=int, default=1, help="runs per engine; the best wall time is reported")
    ap.add_argument("--baseline", help="another Weir binary (an earlier build) to run as well, as `weir-baseline`")
    args = ap.parse_args()

    data = BENCH / "data" / f"orders-{args.rows}.csv"
    out = BENCH / "out"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        print(f"generating {args.rows:,} rows -> {data}", flush=True)
        subprocess.run([sys.executable, str(BENCH / "gen_orders.py"), str(data), str(args.rows)], check=True)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    size_mb = data.stat().st_size / 1e6

    env = dict(os.environ, WEIR_STATE_DIR=str(out / ".weir"))

    def weir_single(binary, name):
        return ([binary, "-q", "run", str(ROOT / "examples/orders/pipeline.yaml"), "--var", f"input={data}",
                 "--var", f"output={out / (name + '.parquet')}", "--memory-limit", args.memory_limit],
                dict(env, WEIR_STATE_DIR=str(out / f".{name}")))

    def weir_fanout(binary, name):
        return ([binary, "-q", "run", str(BENCH / "orders/fanout.yaml"), "--var", f"input={data}",
                 "--var", f"output={out / (name + '.parquet')}", "--var", f"latest={out / (name + '-latest.parquet')}",
                 "--memory-limit", args.memory_limit],
                dict(env, WEIR_STATE_DIR=str(out / f".{name}")))

    baseline = {"weir-baseline": weir_single(args.baseline, "weir-baseline")} if args.baseline else {}
    jobs = {
        **baseline,
        "weir": weir_single(args.weir, "weir"),
        "duckdb": ([sys.executable, str(BENCH / "peers/duckdb_job.py"), str(data), str(out / "duckdb.parquet")], None),
        "polars": ([sys.executable, str(BENCH / "peers/polars_job.py"), str(data), str(out / "polars.parquet")], None),
    }
    results = {name: best_of(name, cmd, job_env, args.runs) for name, (cmd, job_env) in jobs.items()}

    sums = {name: totals(out / f"{name}.parquet") for name in jobs}
    print(f"\ninput: {args.rows:,} rows, {size_mb:,.0f} MB CSV; weir --memory-limit {args.memory_limit}")
    print("result (groups, sum total_spent, sum order_count):")
    for name, s in sums.items():
        print(f"  {name:<14} {s}")
    agree = len({s for s in sums.values()}) == 1
    print("results agree" if agree else "RESULTS DIFFER")

    w_wall, w_rss = results["weir"]
    print(f"\n{'engine':<14}{'wall s':>9}{'rows/s':>14}{'peak MiB':>10}{'weir/peer time':>16}{'weir/peer mem':>15}")
    for name, (wall, rss) in results.items():
        print(f"{name:<14}{wall:>9.2f}{args.rows / wall:>14,.0f}{rss:>10.0f}{w_wall / wall:>16.2f}{w_rss / rss:>15.2f}")

    print("\nfan-out: the same job with a second load, the deduplicated orders")
    fan = {
        **({"weir-fanout-baseline": weir_fanout(args.baseline, "weir-fanout-baseline")} if args.baseline else {}),
        "weir-fanout": weir_fanout(args.weir, "weir-fanout"),
        "duckdb-fanout": (
            [sys.executable, str(BENCH / "peers/duckdb_job.py"), str(data), str(out / "duckdb-fanout.parquet"),
             str(out / "duckdb-fanout-latest.parquet"), str(out / "duckdb-invalid.parquet")],
            None,
        ),
    }
    fan_results = {name: best_of(name, cmd, job_env, args.runs) for name, (cmd, job_env) in fan.items()}
    fan_sums = {name: totals(out / f"{name}.parquet") for name in fan}
    latest = {name: latest_totals(out / f"{name}-latest.parquet") for name in fan}
    print("monthly (groups, sum total_spent, sum order_count) and latest (rows, order ids, sum amount, max updated_at):")
    for name in fan:
        print(f"  {name:<21} {fan_sums[name]}  {latest[name]}")
    fan_agree = len(set(fan_sums.values()) | set(sums.values())) == 1 and len(set(latest.values())) == 1
    print("results agree" if fan_agree else "RESULTS DIFFER")
    f_wall, f_rss = fan_results["weir-fanout"]
    d_wall, d_rss = fan_results["duckdb-fanout"]
    print(f"\nweir fan-out {f_wall:.2f} s, {f_rss:.0f} MiB: {f_wall / w_wall:.2f}x weir's single-load time "
          f"(goal <= 1.15), {f_wall / d_wall:.2f}x duckdb's fan-out time (goal <= 1.00), "
          f"{f_rss / d_rss:.2f}x its memory")
    if args.baseline:
        b_wall, b_rss = fan_results["weir-fanout-baseline"]
        print(f"weir fan-out against the baseline build: {f_wall / b_wall:.2f}x its time, {f_rss / b_rss:.2f}x its memory "
              f"({b_wall:.2f} s, {b_rss:.0f} MiB)")
    agree = agree and fan_agree
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
