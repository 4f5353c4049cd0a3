#!/usr/bin/env python3
"""Fault trials for Weir's batched loads (`settings.commit_every`): load N rows, inject a fault, resume, and compare
the destination with what an uninterrupted run leaves (row count, distinct ids, an MD5 over every row in id order).

Scenarios (each run `--trials` times):
  pg-upsert-kill   CSV -> PostgreSQL upsert; SIGKILL at a random moment, then `weir run --resume`
  pg-append-kill   the same in append mode, where a batch loaded twice would show as duplicate ids
  parquet-kill     CSV -> a Parquet directory; SIGKILL at a random moment, then resume
  pg-terminate     CSV -> PostgreSQL append while another session runs pg_terminate_backend on Weir's sessions
  api-storm        a local HTTP API answering 503, 429 (Retry-After) or dropping the connection on a share of
                   requests -> PostgreSQL upsert

Needs the PostgreSQL on 127.0.0.1:5432 (trust auth), `psql`, and duckdb from pip (to read the Parquet output).
Every database it makes is named weir_crash_<pid>_<n> and dropped afterwards.

  python3 scripts/crash_harness.py --rows 1000000 --trials 20
"""
import argparse
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

PG = "postgres://postgres@127.0.0.1:5432"
BATCH = 50_000


def psql(db, sql):
    out = subprocess.run(["psql", f"{PG}/{db}", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {sql}\n{out.stderr}")
    return out.stdout.strip()


def row(i):
    return (i, f"name {i}", i % 1000)


def expected_digest(rows):
    text = "\n".join(f"{i},{n},{a}" for i, n, a in (row(i) for i in range(1, rows + 1)))
    return hashlib.md5(text.encode()).hexdigest()


PIPELINE = """name: crash
settings: {{ commit_every: {batch}, retry: {{ max_attempts: 30, delay: 100ms, max_delay: 2s }} }}
connections:
  db: {{ kind: postgres, url: "${{DB_URL}}" }}
  api: {{ kind: http, url: "${{API_URL}}" }}
steps:
{source}
  out:
{sink}
"""
CSV_SOURCE = "  rows:\n    read_csv: { path: data/rows.csv, schema: { id: bigint, name: text, amount: bigint } }"
API_SOURCE = """  rows:
    read_api:
      connection: api
      url: /items
      records: $.data
      paginate: { cursor: { param: cursor, from: $.next } }
      schema: { id: bigint, name: text, amount: bigint }
      retry: { max_attempts: 50, delay: 20ms, max_delay: 500ms, retry_on: [timeout, connection, 429, 503] }"""
SINKS = {
    "upsert": "    write_db: { input: rows, connection: db, table: t, mode: upsert, keys: [id] }",
    "append": "    write_db: { input: rows, connection: db, table: t, mode: append }",
    "parquet": "    write_parquet: { input: rows, path: out/ }",
}


class Trial:
    def __init__(self, args, workdir, n, source, sink):
        self.args, self.n = args, n
        self.dir = os.path.join(workdir, f"trial-{n}")
        os.makedirs(os.path.join(self.dir, "data"))
        os.symlink(os.path.join(workdir, "rows.csv"), os.path.join(self.dir, "data", "rows.csv"))
        with open(os.path.join(self.dir, "crash.yaml"), "w") as f:
            f.write(PIPELINE.format(batch=BATCH, source=source, sink=SINKS[sink]))
        self.db = f"weir_crash_{os.getpid()}_{n}"
        psql("postgres", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        psql("postgres", f"CREATE DATABASE {self.db}")
        self.env = dict(os.environ, DB_URL=f"{PG}/{self.db}", API_URL=args.api_url or "http://127.0.0.1:1", WEIR_LOG_FORMAT="json")
        self.env.pop("WEIR_STATE_DIR", None)

    def start(self, *extra):
        return subprocess.Popen([self.args.weir, "-q", "run", "crash.yaml", *extra], cwd=self.dir, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def run(self, *extra):
        return subprocess.run([self.args.weir, "-q", "run", "crash.yaml", *extra], cwd=self.dir, env=self.env,
                              capture_output=True, text=True)

    def resume(self):
        """Resumes until the run succeeds (a resume may itself meet a fault); returns how many resumes it took."""
        for attempt in range(1, 6):
            out = self.run("--resume")
            if out.returncode == 0 or "nothing to resume" in out.stderr:
                return attempt
            if "no run to resume" in out.stderr:  # killed before the run was recorded
                if self.run().returncode == 0:
                    return attempt
            sys.stderr.write(out.stderr[-2000:])
        sys.exit(f"trial {self.n}: no success after 5 resumes")

    def result(self, sink):
        if sink == "parquet":
            import duckdb
            path = os.path.join(self.dir, "out", "*.parquet")
            q = (f"SELECT count(*), count(DISTINCT id), md5(string_agg(id || ',' || name || ',' || amount, chr(10) "
                 f"ORDER BY id)) FROM read_parquet('{path}')")
            return tuple(duckdb.sql(q).fetchall()[0])
        out = psql(self.db, "SELECT count(*), count(DISTINCT id), md5(string_agg(id || ',' || name || ',' || amount, "
                            "E'\\n' ORDER BY id)) FROM t")
        count, distinct, digest = out.split("|")
        return int(count), int(distinct), digest

    def drop(self):
        psql("postgres", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_trial(trial, baseline):
    """SIGKILL at a random moment of an uninterrupted run's duration; True if the process was still running."""
    proc = trial.start()
    time.sleep(random.uniform(0.02, 1.0) * baseline)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trial.resume()
    return alive


def terminate_trial(trial, _baseline):
    """Terminates Weir's database sessions every 50-400 ms while it loads; True if at least one was hit."""
    proc = trial.start()
    hits = 0
    while proc.poll() is None:
        time.sleep(random.uniform(0.05, 0.4))
        hits += int(psql(trial.db, f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   f"WHERE datname = '{trial.db}' AND pid <> pg_backend_pid() AND state <> 'idle'") or 0)
    if proc.returncode != 0:
        trial.resume()
    return hits > 0


def storm_trial(trial, _baseline):
    """The API fails a share of requests; the run must retry through them. True if any request failed."""
    before = STORM["faults"]
    out = trial.run()
    if out.returncode != 0:
        trial.resume()
    return STORM["faults"] > before


STORM = {"faults": 0, "rows": 0, "page": 10_000}


class StormHandler(http.server.BaseHTTPRequestHandler):
    """Pages of `page` records by cursor; 15% of requests get 503, 10% 429 with Retry-After, 5% a dropped connection."""

    def do_GET(self):
        roll = random.random()
        if roll < 0.05:
            STORM["faults"] += 1
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if roll < 0.30:
            STORM["faults"] += 1
            status = 503 if roll < 0.20 else 429
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        cursor = int(self.path.split("cursor=")[1]) if "cursor=" in self.path else 0
        end = min(cursor + STORM["page"], STORM["rows"])
        data = [dict(zip(("id", "name", "amount"), row(i))) for i in range(cursor + 1, end + 1)]
        body = json.dumps({"data": data, "next": end if end < STORM["rows"] else None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_):
        pass


SCENARIOS = {
    "pg-upsert-kill": (CSV_SOURCE, "upsert", kill_trial),
    "pg-append-kill": (CSV_SOURCE, "append", kill_trial),
    "parquet-kill": (CSV_SOURCE, "parquet", kill_trial),
    "pg-terminate": (CSV_SOURCE, "append", terminate_trial),
    "api-storm": (API_SOURCE, "upsert", storm_trial),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/weir-target")
    default_weir = next((p for p in (f"{target}/release/weir", f"{target}/debug/weir") if os.path.exists(p)), None)
    parser.add_argument("--weir", default=default_weir, help="the weir binary (default: release, else debug build)")
    args = parser.parse_args()
    if not args.weir:
        sys.exit("no weir binary: build it with `cargo build --release -p weir-cli` or pass --weir")
    random.seed(args.seed)
    args.api_url = None

    workdir = tempfile.mkdtemp(prefix="weir-crash-")
    with open(os.path.join(workdir, "rows.csv"), "w") as f:
        f.write("id,name,amount\n")
        for i in range(1, args.rows + 1):
            f.write("%d,%s,%d\n" % row(i))
    digest = expected_digest(args.rows)
    STORM["rows"] = args.rows
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StormHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    args.api_url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"weir: {args.weir}\nrows: {args.rows}, batches of {BATCH}, seed {args.seed}\n")
    print(f"{'scenario':<16} {'trials':>6} {'faults hit':>10} {'rows lost':>10} {'duplicated':>10} {'checksum ok':>11} {'baseline s':>10}")
    failed = False
    n = 0
    try:
        for name in args.scenarios:
            source, sink, inject = SCENARIOS[name]
            n += 1
            base = Trial(args, workdir, n, source, sink)
            try:
                started = time.time()
                out = base.run()
                baseline = time.time() - started
                if out.returncode != 0 or base.result(sink) != (args.rows, args.rows, digest):
                    sys.exit(f"{name}: the uninterrupted run is wrong:\n{out.stderr[-3000:]}")
            finally:
                base.drop()
            hit = lost = duplicated = ok = 0
            for _ in range(args.trials):
                n += 1
                trial = Trial(args, workdir, n, source, sink)
                try:
                    hit += bool(inject(trial, baseline))
                    count, distinct, got = trial.result(sink)
                finally:
                    trial.drop()
                lost += args.rows - distinct
                duplicated += count - distinct
                ok += got == digest
            failed |= lost > 0 or duplicated > 0 or ok < args.trials
            print(f"{name:<16} {args.trials:>6} {hit:>10} {lost:>10} {duplicated:>10} {ok:>8}/{args.trials:<2} {baseline:>10.1f}", flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
