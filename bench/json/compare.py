"""Reading one large pretty-printed JSON array (the way most tools and APIs export JSON) with Weir and with DuckDB,
one after the other in one run: both count the records and total a field, and the totals must agree. Prints the
file's size, each one's wall time and peak RSS (GNU time), and Weir's ratios. A reader that streams holds a batch
of records at a time, so its peak RSS stays well under the file's size.

    cargo build --release -p weir-cli
    python3 bench/json/compare.py --mb 1024
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from timing import measure  # noqa: E402

WEIR = os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir")

PIPELINE = """name: json_rss
steps:
  docs:
    read_json: {{ path: {path} }}
  totals:
    sql: {{ query: "SELECT count(*) AS n, sum(amount) AS total FROM docs" }}
  out:
    write_csv: {{ input: totals, path: {out} }}
"""

DUCKDB = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET enable_progress_bar = false")
n, total = con.execute("SELECT count(*), sum(amount) FROM read_json(?, format = 'array')", [sys.argv[1]]).fetchone()
print(f"{n},{total}")
"""


def generate(path, megabytes):
    """A pretty-printed array of order records, nested and with lists, of about `megabytes` MB."""
    target = megabytes * 1_000_000
    with open(path, "w") as f:
        f.write("[\n")
        i, written = 0, 2
        while written < target:
            record = {
                "id": i,
                "customer": {"name": f"customer {i % 10007}", "country": ["DE", "FR", "US"][i % 3]},
                "amount": (i % 1000) / 4,
                "tags": ["new", "web"] if i % 2 else ["repeat"],
                "created_at": f"2024-01-{i % 28 + 1:02d}T10:{i % 60:02d}:00Z",
            }
            text = ("" if i == 0 else ",\n") + json.dumps(record, indent=2)
            f.write(text)
            written += len(text)
            i += 1
        f.write("\n]\n")
    return i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="size of the generated array")
    args = ap.parse_args()
    data = ROOT / "bench" / "data" / f"orders-pretty-{args.mb}mb.json"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        generate(data, args.mb)
    out = ROOT / "bench" / "out" / "json"
    out.mkdir(parents=True, exist_ok=True)
    pipeline = out / "pipeline.yaml"
    result = out / "totals.csv"
    pipeline.write_text(PIPELINE.format(path=data, out=result))

    env = dict(os.environ, WEIR_STATE_DIR=str(out / "state"), WEIR_LOG_FORMAT="human")
    weir_wall, weir_rss = measure("weir", [WEIR, "run", str(pipeline)], env)
    weir_totals = result.read_text().splitlines()[1]
    print(f"Weir: {weir_wall:.2f}s, {weir_rss:.0f} MiB peak RSS", flush=True)
    duck_out = out / "duckdb.txt"
    duck_wall, duck_rss = measure("duckdb", ["sh", "-c", f'{sys.executable} -c "$0" "$1" > {duck_out}', DUCKDB, str(data)])
    duck_totals = duck_out.read_text().strip()

    n_weir, total_weir = weir_totals.split(",")
    n_duck, total_duck = duck_totals.split(",")
    if int(n_weir) != int(n_duck) or abs(float(total_weir) - float(total_duck)) > 1e-6 * abs(float(total_duck)):
        sys.exit(f"the totals differ: Weir {weir_totals}, DuckDB {duck_totals}")
    size = data.stat().st_size / 2**20
    print(f"{data.name}: {size:.0f} MiB, {int(n_weir):,} records, pretty-printed array")
    print(f"{'engine':<8} {'wall':>9} {'peak RSS':>10} {'RSS / file':>11}")
    for name, wall, rss in [("Weir", weir_wall, weir_rss), ("DuckDB", duck_wall, duck_rss)]:
        print(f"{name:<8} {wall:>8.2f}s {rss:>6.0f} MiB {rss / size:>10.2f}x")
    print(f"Weir / DuckDB: wall {weir_wall / duck_wall:.2f}x, peak RSS {weir_rss / duck_rss:.2f}x")


if __name__ == "__main__":
    main()
