"""1 million records over 10,000 pages of a local JSON API (bench/api server, Rust, part of the benchmark) into
Parquet, with Weir's read_api and with dlt's rest_api source, one after the other in one run. Checks both wrote
every record once (count, distinct ids, sum of ids) and prints wall time, records/s, peak RSS and the ratio.

    cargo build --release -p weir-cli --bin weir --example api_bench_server
    python3 bench/api/compare.py --records 1000000 --page-size 100
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from timing import measure  # noqa: E402
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/weir-target")) / "release"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(glob):
    q = f"SELECT count(*), count(DISTINCT id), sum(id) FROM read_parquet('{glob}')"
    return duckdb.sql(q).fetchall()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--page-size", type=int, default=100)
    args = ap.parse_args()

    out = ROOT / "bench" / "out" / "api"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen([str(TARGET / "examples" / "api_bench_server"), str(port), str(args.records), str(args.page_size)])
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("the bench server did not start")
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, WEIR_STATE_DIR=str(out / ".weir"))
        weir = measure("weir", [str(TARGET / "weir"), "-q", "run", str(ROOT / "bench/api/weir.yaml"),
                                "--var", f"base={base}", "--var", f"output={out / 'weir.parquet'}"], env)
        dlt = measure("dlt", [sys.executable, str(ROOT / "bench/api/dlt_job.py"), base + "/", str(out / "dlt")])
    finally:
        server.terminate()
        server.wait()

    expected = (args.records, args.records, args.records * (args.records + 1) // 2)
    results = {"weir": check(out / "weir.parquet"), "dlt": check(f"{out}/dlt/api/items/*.parquet")}
    pages = -(-args.records // args.page_size)
    print(f"\n{args.records:,} records over {pages:,} pages of {args.page_size}")
    ok = True
    for name, got in results.items():
        good = got == expected
        ok &= good
        print(f"  {name:<5} rows, distinct ids, sum of ids: {got} {'ok' if good else 'WRONG, expected ' + str(expected)}")
    print(f"\n{'tool':<6}{'wall s':>9}{'records/s':>12}{'peak MiB':>10}")
    for name, (wall, rss) in (("weir", weir), ("dlt", dlt)):
        print(f"{name:<6}{wall:>9.2f}{args.records / wall:>12,.0f}{rss:>10.0f}")
    print(f"\nWeir's throughput is {dlt[0] / weir[0]:.1f}x dlt's (goal: 10x)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
