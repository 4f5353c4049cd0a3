"""1 million records over 10,000 pages of a local JSON API (bench/api server, Rust, part of the benchmark) into
Parquet, with Weir's read_api and with dlt's rest_api source, one after the other in one run. Checks both wrote
every record once (count, distinct ids, sum of ids) and prints wall time, records/s, peak RSS, CPU time per record
(user + system of the tool's process, the server's not counted) and the ratio.

    cargo build --release -p weir-cli --bin weir --example api_bench_server
    python3 bench/api/compare.py --records 1000000 --page-size 100
    python3 bench/api/compare.py --baseline /path/to/older/weir    # also an earlier build of Weir, before/after
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
from timing import measure_cpu  # noqa: E402
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
    ap.add_argument("--weir", default=str(TARGET / "weir"))
    ap.add_argument("--baseline", help="another Weir binary (an earlier build) to run as well, as `weir-baseline`")
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
        runs = {}
        weirs = [("weir", args.weir)] + ([("weir-baseline", args.baseline)] if args.baseline else [])
        for name, binary in weirs:
            env = dict(os.environ, WEIR_STATE_DIR=str(out / f".{name}"))
            runs[name] = measure_cpu(name, [binary, "-q", "run", str(ROOT / "bench/api/weir.yaml"), "--var",
                                            f"base={base}", "--var", f"output={out / (name + '.parquet')}"], env)
        runs["dlt"] = measure_cpu("dlt", [sys.executable, str(ROOT / "bench/api/dlt_job.py"), base + "/",
                                          str(out / "dlt")])
    finally:
        server.terminate()
        server.wait()

    expected = (args.records, args.records, args.records * (args.records + 1) // 2)
    results = {name: check(out / f"{name}.parquet") for name, _ in weirs}
    results["dlt"] = check(f"{out}/dlt/api/items/*.parquet")
    pages = -(-args.records // args.page_size)
    print(f"\n{args.records:,} records over {pages:,} pages of {args.page_size}")
    ok = True
    for name, got in results.items():
        good = got == expected
        ok &= good
        print(f"  {name:<14} rows, distinct ids, sum of ids: {got} {'ok' if good else 'WRONG, expected ' + str(expected)}")
    print(f"\n{'tool':<14}{'wall s':>9}{'records/s':>12}{'peak MiB':>10}{'CPU s':>8}{'CPU us/record':>15}")
    for name, (wall, rss, cpu) in runs.items():
        print(f"{name:<14}{wall:>9.2f}{args.records / wall:>12,.0f}{rss:>10.0f}{cpu:>8.2f}"
              f"{cpu * 1e6 / args.records:>15.2f}")
    for name, _ in weirs:
        wall, _, cpu = runs[name]
        print(f"\n{name}: throughput {runs['dlt'][0] / wall:.1f}x dlt's (goal: 25x), "
              f"{cpu * 1e6 / args.records:.2f} us of CPU per record (goal: at most 2)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
