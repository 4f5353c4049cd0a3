"""The cluster benchmark: the orders job run here, then on a Ballista cluster of `weir scheduler` and one, then two,
`weir executor`s on this same machine, one after the other in one run. Two pipelines: the orders example itself
(its CSV reader and `validate` run on the machine that runs the pipeline, the rest on the cluster) and
bench/cluster/orders_parquet.yaml (the same transforms over a Parquet copy of the orders, all but the load on the
cluster). Every run's monthly totals must equal the local run's. Prints wall time, rows/s, rows/s per executor,
the driver's CPU time (the `weir run` process) and the executors', and the cluster's time against the local run.

On one machine a cluster cannot be faster than a local run: its executors share the same cores. The point is the
overhead (plans to protobuf and back, shuffles written to disk and fetched over Flight, results streamed to the
driver) and what the driver still does itself.

    cargo build --release -p weir-cli
    python3 bench/cluster/compare.py --rows 10000000
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

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
from compare import totals  # noqa: E402
from gen_orders import orders_csv  # noqa: E402
from timing import cpu_seconds, measure_cpu  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"{what} did not start")


class Cluster:
    """A scheduler and `executors` executors of `slots` task slots each, on 127.0.0.1."""

    def __init__(self, weir, executors, slots, work):
        port = free_port()
        self.engine = f"ballista://127.0.0.1:{port}"
        log = open(work / "scheduler.log", "w")
        self.processes = [subprocess.Popen([weir, "scheduler", "--listen", f"127.0.0.1:{port}"], stderr=log)]
        wait_for_port(port, "the scheduler")
        for i in range(executors):
            flight, grpc = free_port(), free_port()
            (work / f"executor-{i}").mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                [weir, "-q", "executor", "--scheduler", f"127.0.0.1:{port}", "--flight-port", str(flight),
                 "--grpc-port", str(grpc), "--concurrent-tasks", str(slots), "--work-dir", str(work / f"executor-{i}")],
                stderr=subprocess.DEVNULL))
            wait_for_port(flight, f"executor {i}")
        self.executors = self.processes[1:]
        deadline = time.time() + 30
        while (work / "scheduler.log").read_text().count("register executor") < executors:
            if time.time() > deadline:
                sys.exit("the executors did not register")
            time.sleep(0.1)

    def shuffle_bytes(self, work):
        """Bytes of shuffle files the executors hold (kept until the scheduler cleans finished jobs up)."""
        return sum(f.stat().st_size for d in work.glob("executor-*") for f in d.rglob("*") if f.is_file())

    def cpu(self):
        return sum(cpu_seconds(p.pid) for p in self.executors)

    def peak_mib(self):
        """The largest peak RSS of one executor so far."""
        peaks = []
        for p in self.executors:
            with open(f"/proc/{p.pid}/status") as f:
                peaks += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")]
        return max(peaks)

    def stop(self):
        for p in self.processes:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--memory-limit", default="512MB")
    ap.add_argument("--slots", type=int, default=2, help="task slots per executor")
    ap.add_argument("--weir", default=os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir"))
    args = ap.parse_args()

    csv = orders_csv(args.rows)
    parquet = csv.with_suffix(".parquet")
    if not parquet.exists():
        duckdb.sql(f"COPY (SELECT * FROM read_csv('{csv}')) TO '{parquet}' (FORMAT parquet, ROW_GROUP_SIZE 500000)")
    out = BENCH / "out" / "cluster"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    jobs = {
        "orders (CSV)": (ROOT / "examples/orders/pipeline.yaml", csv),
        "orders (Parquet)": (BENCH / "cluster/orders_parquet.yaml", parquet),
    }
    rows = []
    agree = True
    for job, (pipeline, source) in jobs.items():
        print(f"\n{job}: {args.rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB input", flush=True)
        expected = None
        for executors in [0, 1, 2]:
            name = "here" if executors == 0 else f"{executors} executor{'s' if executors > 1 else ''}"
            work = out / f"{pipeline.stem}-{executors}"
            work.mkdir()
            result = work / "monthly.parquet"
            cmd = [args.weir, "-q", "run", str(pipeline), "--var", f"input={source}", "--var", f"output={result}",
                   "--memory-limit", args.memory_limit]
            cluster = None
            if executors:
                cluster = Cluster(args.weir, executors, args.slots, work)
                cmd += ["--engine", cluster.engine]
            before = cluster.cpu() if cluster else 0.0
            wall, rss, driver_cpu = measure_cpu(f"{job} {name}", cmd, dict(os.environ, WEIR_STATE_DIR=str(work / ".weir")))
            executor_cpu = cluster.cpu() - before if cluster else 0.0
            executor_mib = cluster.peak_mib() if cluster else 0.0
            shuffled = cluster.shuffle_bytes(work) / 1e6 if cluster else 0.0
            if cluster:
                cluster.stop()
            got = totals(result)
            expected = expected or got
            agree = agree and got == expected
            per_executor = args.rows / wall / executors if executors else float("nan")
            print(f"  {name:<12} {wall:7.2f} s  {args.rows / wall:>11,.0f} rows/s  {per_executor:>11,.0f} rows/s per "
                  f"executor  driver {driver_cpu:6.2f} s CPU, {rss:5.0f} MiB  executors {executor_cpu:6.2f} s CPU, "
                  f"{executor_mib:5.0f} MiB each at most, {shuffled:6.0f} MB shuffled  "
                  f"{got}", flush=True)
            rows.append((job, name, wall, driver_cpu, executor_cpu))
        here = next(r[2] for r in rows if r[0] == job and r[1] == "here")
        for _, name, wall, _, _ in (r for r in rows if r[0] == job and r[1] != "here"):
            print(f"  {name}: {wall / here:.2f}x the local run's time")
    print("\nresults agree" if agree else "\nRESULTS DIFFER")
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
