#!/usr/bin/env python3
"""Webhook ingest under load: `weir serve` with one pipeline (records posted to a webhook, upserted into
PostgreSQL, acknowledged after commit) and a load generator in a second process on 127.0.0.1
(crates/weir-cli/examples/webhook_load.rs) posting batches for a fixed time. Prints events/s, p50/p99 latency of the
acknowledgements, peak RSS of the server and how many acknowledged events are missing from the table (must be 0).

    cargo build --release -p weir-cli --bins --examples
    python3 bench/serve/webhook_load.py --seconds 20 --concurrency 8 --batch 500

Creates and drops the database weir_bench_webhook; stops the server by PID.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from serving import free_port, peak_rss_mib, wait_until_up

PG = "postgres://postgres@127.0.0.1:5432"
DB = "weir_bench_webhook"
PIPELINE = """name: events_in
connections:
  db: { kind: postgres, url: "${DB_URL}" }
triggers:
  - webhook: { name: events, token: "${HOOK_TOKEN}", max_body: 16777216 }
settings: { concurrency: %(concurrency)d }
steps:
  events:
    read_webhook: { records: $.events, schema: { id: bigint, kind: text, amount: double } }
  out:
    write_db: { input: events, connection: db, table: events, mode: upsert, keys: [id] }
"""


def psql(db, sql):
    subprocess.run(["psql", f"{PG}/{db}", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--shared-state", action="store_true",
                        help="keep the server's state store in PostgreSQL (schema weir of the benchmark database), as instances sharing one do")
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/weir-target")
    parser.add_argument("--bin-dir", default=f"{target}/release")
    args = parser.parse_args()
    weir, load = f"{args.bin_dir}/weir", f"{args.bin_dir}/examples/webhook_load"
    for path in (weir, load):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release -p weir-cli --bins --examples")

    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    project = tempfile.mkdtemp(prefix="weir-webhook-")
    with open(os.path.join(project, "events.yaml"), "w") as f:
        f.write(PIPELINE % {"concurrency": args.concurrency})
    port = free_port()
    env = dict(os.environ, DB_URL=f"{PG}/{DB}", HOOK_TOKEN="bench-token")
    state = ["--state", f"{PG}/{DB}"] if args.shared_state else []
    server = subprocess.Popen([weir, "-q", "serve", project, "--listen", f"127.0.0.1:{port}", "--max-runs", str(args.concurrency), *state],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, server)
        url = f"http://127.0.0.1:{port}/hooks/events"
        out = subprocess.run([load, url, "bench-token", str(args.seconds), str(args.concurrency), str(args.batch), f"{PG}/{DB}", "events"],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        result["server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        shutil.rmtree(project, ignore_errors=True)
    store = "PostgreSQL (shared)" if args.shared_state else "SQLite (embedded)"
    print(f"concurrency {args.concurrency}, {args.batch} events per request, {args.seconds:.0f} s, state store {store}")
    print(f"requests {result['requests']} (refused {result['refused']}), events acknowledged {result['events_acked']}")
    print(f"events/s {result['events_per_second']:.0f} (goal 20000: ratio {result['events_per_second'] / 20000:.2f})")
    print(f"ack latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms (goal < 50), max {result['max_ms']:.1f} ms")
    print(f"acknowledged events missing from the table: {result['acked_missing']}")
    print(f"server peak RSS {result['server_peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
