#!/usr/bin/env python3
"""Scheduler scale: `weir serve` with N pipelines, each on a once-a-minute cron (`* * * * *`), for a few minutes.
Reads from /metrics the trigger lag (how late each fire was claimed and queued after its due time), apart from
the queue wait (how long its run then waited for one of the `--max-runs` slots) and the queue's depth at the end,
the runs that finished, and the server's peak RSS.

    cargo build --release -p weir-cli --bins
    python3 bench/serve/scheduler_scale.py --pipelines 10000 --seconds 150

Each pipeline reads a one-row CSV and writes one; fires that find their pipeline's previous run still queued are
skipped (no overlap), which the output counts.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from serving import free_port, peak_rss_mib, wait_until_up

PIPELINE = """name: p{n}
triggers:
  - cron: "* * * * *"
steps:
  rows:
    read_csv: {{ path: data/one.csv }}
  out:
    write_csv: {{ input: rows, path: out/p{n}.csv }}
"""


def metrics(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()


def histogram(text, name):
    buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), int(m.group(2)))
               for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\d+)$', text, re.M)]
    return sorted(buckets)


def quantile(buckets, q):
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return bound, total
    return float("nan"), total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--max-runs", type=int, default=4)
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/weir-target")
    parser.add_argument("--weir", default=f"{target}/release/weir")
    args = parser.parse_args()
    if not os.path.exists(args.weir):
        sys.exit(f"{args.weir} is missing: cargo build --release -p weir-cli --bins")

    project = tempfile.mkdtemp(prefix="weir-scale-")
    os.makedirs(os.path.join(project, "data"))
    with open(os.path.join(project, "data", "one.csv"), "w") as f:
        f.write("id\n1\n")
    for n in range(args.pipelines):
        with open(os.path.join(project, f"p{n}.yaml"), "w") as f:
            f.write(PIPELINE.format(n=n))
    port = free_port()
    started = time.time()
    log = open(os.path.join(project, "serve.log"), "w+")
    server = subprocess.Popen([args.weir, "-q", "serve", project, "--listen", f"127.0.0.1:{port}", "--max-runs", str(args.max_runs),
                               "--reload-secs", "10"], stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_until_up(port, server, log)
        loaded = time.time() - started
        time.sleep(args.seconds)
        text = metrics(port)
        rss = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.seek(0)
        err = log.read()
        shutil.rmtree(project, ignore_errors=True)
    lag = histogram(text, "weir_schedule_lag_seconds")
    p50, fires = quantile(lag, 0.50)
    p99, _ = quantile(lag, 0.99)
    wait = histogram(text, "weir_run_queue_wait_seconds")
    w50, waited = quantile(wait, 0.50)
    w99, _ = quantile(wait, 0.99)
    depth = re.search(r"^weir_run_queue_depth (\S+)$", text, re.M)
    oldest = re.search(r"^weir_run_queue_oldest_seconds (\S+)$", text, re.M)
    runs = sum(int(m.group(1)) for m in re.finditer(r'^weir_runs_total\{[^}]*status="success"\} (\d+)$', text, re.M))
    failed = sum(int(m.group(1)) for m in re.finditer(r'^weir_runs_total\{[^}]*status="failed"\} (\d+)$', text, re.M))
    skipped = err.count("Scheduled run skipped")
    print(f"{args.pipelines} pipelines on `* * * * *`, {args.seconds:.0f} s after a start-up of {loaded:.1f} s, --max-runs {args.max_runs}")
    print(f"fires triggered {fires}; trigger lag p50 <= {p50} s, p99 <= {p99} s (goal p99 < 1 s; bucket upper bounds)")
    print(f"queue wait of {waited} runs: p50 <= {w50} s, p99 <= {w99} s; at the end {depth.group(1) if depth else '?'} "
          f"runs waiting, the oldest for {float(oldest.group(1)) if oldest else float('nan'):.1f} s")
    print(f"runs finished: {runs} succeeded, {failed} failed; fires skipped because the previous run was still queued: {skipped}")
    print(f"server peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
