"""The same job (CSV -> Parquet, bench/s3/job.yaml) on local disk and on S3, one after the other in one run: the
S3 run reads the CSV from a bucket and writes the Parquet back to it. The S3 server is moto on 127.0.0.1 (PyPI
`moto[server]`), a Python server sharing the machine's 2 cores, so the figure includes its cost; `--server
s3s-fs` uses s3s-fs instead (crates.io, a Rust server), for a second server's figures. Runs `--repeat` pairs
(local, then S3) and prints each one's wall times, peak memory, CPU seconds of Weir and of the server and ratio,
then the median ratio; checks both outputs hold every row. 13 M rows make 1 GB of CSV.

    cargo build --release -p weir-cli
    python3 bench/s3/compare.py --rows 13000000
    cargo install s3s-fs@0.14.1 --features binary   # only for --server s3s-fs
    python3 bench/s3/compare.py --rows 13000000 --server s3s-fs
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3
import duckdb

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from timing import cpu_seconds, measure_cpu  # noqa: E402

WEIR = os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=13_000_000)
    ap.add_argument("--server", choices=["moto", "s3s-fs"], default="moto")
    ap.add_argument("--repeat", type=int, default=5, help="local/S3 pairs to run")
    args = ap.parse_args()
    data = ROOT / "bench" / "data" / f"orders-{args.rows}.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_orders.py"), str(data), str(args.rows)], check=True)
    out = ROOT / "bench" / "out" / "s3"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if args.server == "moto":
        command = ["moto_server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        (out / "s3s").mkdir()
        command = ["s3s-fs", "--host", "127.0.0.1", "--port", str(port), "--access-key", "test",
                   "--secret-key", "test", str(out / "s3s")]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        s3.upload_file(str(data), "bench", "in/orders.csv")
        env = dict(os.environ, WEIR_STATE_DIR=str(out / ".weir"), S3_ENDPOINT=endpoint)
        job = str(ROOT / "bench/s3/job.yaml")
        # Pairs run back to back, so a pair shares the machine's mood; the ratio reported is the median pair's.
        pairs = []
        for _ in range(args.repeat):
            local = measure_cpu("local", [WEIR, "-q", "run", job, "--var", f"input={data}",
                                          "--var", f"output={out / 'local.parquet'}"], env)
            before = cpu_seconds(server.pid)
            remote = measure_cpu("s3", [WEIR, "-q", "run", job, "--var", "input=s3://bench/in/orders.csv",
                                        "--var", "output=s3://bench/out/orders.parquet"], env)
            pairs.append((local, remote, cpu_seconds(server.pid) - before))
        s3.download_file("bench", "out/orders.parquet", str(out / "s3.parquet"))
    finally:
        server.terminate()
        server.wait()

    counts = {name: duckdb.sql(f"SELECT count(*) FROM read_parquet('{out / name}.parquet')").fetchall()[0][0]
              for name in ("local", "s3")}
    size_mb = data.stat().st_size / 1e6
    print(f"\n{args.rows:,} rows, {size_mb:,.0f} MB of CSV -> Parquet; rows written: {counts}")
    print(f"{'run':<5}{'where':<7}{'wall s':>9}{'MB/s':>9}{'peak MiB':>10}{'Weir CPU s':>12}{'server CPU s':>14}{'ratio':>8}")
    for i, (local, remote, server_cpu) in enumerate(pairs, 1):
        for name, (wall, rss, cpu), server_s in (("local", local, 0.0), ("s3", remote, server_cpu)):
            ratio = f"{remote[0] / local[0]:>8.2f}" if name == "s3" else ""
            print(f"{i:<5}{name:<7}{wall:>9.2f}{size_mb / wall:>9.0f}{rss:>10.0f}{cpu:>12.2f}{server_s:>14.2f}{ratio}")
    ratios = sorted(remote[0] / local[0] for local, remote, _ in pairs)
    print(f"\nS3 ({args.server}) / local wall time, median of {len(ratios)}: {statistics.median(ratios):.2f}"
          f" (range {ratios[0]:.2f}-{ratios[-1]:.2f}; goal: at most 1.5)")
    sys.exit(0 if counts["local"] == counts["s3"] == args.rows else 1)


if __name__ == "__main__":
    main()
