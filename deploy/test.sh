#!/usr/bin/env bash
# Installs what the tests need and runs them all: formatting, lints, and the
# whole test suite. This is the command the README gives and .ci/run calls.
#
# On a fresh Debian machine it needs Rust (1.88 or newer, from rustup); it
# installs with apt-get what is missing of: a C compiler, pkg-config, Python
# with venv, Prometheus and the node exporter (real clients for the server
# tests), Alertmanager with amtool and aiosmtpd (notifications), make and libssl-dev (to build librdkafka), Chromium and
# chromedriver (the dashboard test), and from PyPI into
# .deploy-cache/venv the OpenTelemetry Python SDK, the Kafka clients
# confluent-kafka and kafka-python, and DuckDB with its httpfs extension;
# it starts a Kafka-compatible broker,
# tansu, with deploy/tansu.sh (built once into ~/.cache/tidemark, about 20
# minutes), an S3 server (moto), a private PostgreSQL cluster and Redis
# server (Debian's packages, installed where missing) and TimescaleDB in
# PGlite (npm; Node.js from apt-get where missing). See deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# Room to build: clippy and the test binaries take about 4 GB of target/
# (3.4 GB for the tests, measured 2026-12-02; tansu's first build uses a
# temporary directory of its own besides). A disk that fills mid-link
# shows up as the linker dying with "signal 7 [Bus error]", so say it
# plainly before starting.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
need_mb=$((6 * 1024 - $(du -sm "$target_dir" | cut -f1)))
free_mb=$(df -Pm "$target_dir" | awk 'NR == 2 {print $4}')
if ((free_mb < need_mb)); then
  echo "deploy/test.sh: only ${free_mb} MB free where $target_dir is; the build needs about ${need_mb} MB more (6 GB in all, counting what it already holds). Free some space (cargo clean in other checkouts) and run this again." >&2
  exit 1
fi

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# librdkafka (the Kafka connectors) is built from source with make, against
# OpenSSL for TLS and SASL.
command -v make >/dev/null 2>&1 || need_apt+=(make)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
# The real Prometheus scrapes `tidemark serve` in cli/tests/server.rs.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# ...and remote-writes the node exporter's metrics into a pipeline.
command -v prometheus-node-exporter >/dev/null 2>&1 || need_apt+=(prometheus-node-exporter)
# A real Alertmanager receives the alertmanager sink's alerts, and amtool
# is the oracle of the route transform's routing (cli/tests/notify.rs,
# operators/tests/route_amtool.rs).
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# A real SMTP server (aiosmtpd, with STARTTLS and authentication) receives
# the notify sink's email.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need_apt+=(python3-aiosmtpd)
# Headless Chromium and its WebDriver load the live dashboard in
# cli/tests/dashboard.rs.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "deploy/test.sh: installing ${need_apt[*]} with apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deploy/test.sh: cargo not found. Install Rust 1.88 or newer with rustup (https://rustup.rs) and run this again." >&2
  exit 1
fi
version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.88.0\n' "$version" | sort -V | head -1)" != "1.88.0" ]; then
  echo "deploy/test.sh: rustc $version is too old; Tidemark needs 1.88 or newer (rustup update)." >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# Real clients in a virtual environment of the project's own (pinned
# versions): the OpenTelemetry Python SDK (an OTLP exporter for the server
# tests) and two independent Kafka clients, confluent-kafka (librdkafka) and
# kafka-python (pure Python), for the Kafka tests; DuckDB and its httpfs
# extension (same version) read the Parquet archive back, from S3 too.
venv=.deploy-cache/venv
python_packages=(
  "opentelemetry-sdk==1.45.2"
  "opentelemetry-exporter-otlp-proto-grpc==1.45.2"
  "confluent-kafka==2.16.1"
  "kafka-python==3.0.12"
  "duckdb==1.4.4"
  "duckdb-ext-httpfs==1.4.4.20260205"
)
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF "duckdb-ext-httpfs==1.4.4.20260205" \
   || ! "$venv/bin/python" -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, confluent_kafka, kafka, duckdb" >/dev/null 2>&1; then
  echo "deploy/test.sh: installing ${python_packages[*]} into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${python_packages[@]}"
fi

# A Kafka-compatible broker for the Kafka tests: tansu, built once into a
# machine-wide cache (about 20 minutes the first time), run in memory.
# (Assigned before export, so that a failed start stops this script.)
TIDEMARK_KAFKA="${TIDEMARK_KAFKA:-$(deploy/tansu.sh start 19092)}"
export TIDEMARK_KAFKA
# A local S3 server (moto): the Kafka test that restarts its broker keeps
# the broker's data there.
TIDEMARK_S3="${TIDEMARK_S3:-$(deploy/s3.sh start 19100)}"
export TIDEMARK_S3
# The timescaledb and redis sinks' tests: a private PostgreSQL cluster
# (the outage test starts and stops another on 15433 itself), TimescaleDB
# in PGlite (restarted: a fresh session, see deploy/timescaledb.sh), and a
# private Redis.
TIDEMARK_POSTGRES="${TIDEMARK_POSTGRES:-$(deploy/postgres.sh start 15432)}"
export TIDEMARK_POSTGRES
TIDEMARK_TIMESCALEDB="${TIDEMARK_TIMESCALEDB:-$(deploy/timescaledb.sh restart 15440)}"
export TIDEMARK_TIMESCALEDB
TIDEMARK_REDIS="${TIDEMARK_REDIS:-$(deploy/redis.sh start 16379)}"
export TIDEMARK_REDIS

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked
