#!/usr/bin/env bash
# The test command: installs what a fresh Debian machine lacks, then runs every test of the workspace.
# Build output goes to $CARGO_TARGET_DIR (default /var/tmp/weir-target), outside the clone, so reruns are warm.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# mold links the DataFusion-sized test binaries several times faster than ld.bfd; unixODBC (and its PostgreSQL
# driver) is what the ODBC connector links against and is tested through.
if ! command -v mold >/dev/null 2>&1 || ! command -v gzip >/dev/null 2>&1 \
  || [ ! -e /usr/include/sql.h ] || ! grep -q '^\[PostgreSQL Unicode\]' /etc/odbcinst.ini 2>/dev/null; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends mold gzip unixodbc-dev odbc-postgresql >/dev/null
fi

# A real S3 server for the object-storage tests (moto, path-style, on 127.0.0.1; each test starts its own).
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet 'moto[server]'
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/weir-target}"
export RUSTFLAGS="${RUSTFLAGS:--C link-arg=-fuse-ld=mold}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo test --workspace --locked --features weir-cli/odbc "$@"
