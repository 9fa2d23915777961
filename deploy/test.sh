#!/usr/bin/env bash
# Installs what the tests need and runs them all: formatting, lints, and the
# whole test suite. This is the command the README gives and .ci/run calls.
#
# On a fresh Debian machine it needs Rust (1.88 or newer, from rustup); it
# installs with apt-get what is missing of: a C compiler, pkg-config, Python
# with venv, Prometheus and the node exporter (real clients for the server
# tests), and the OpenTelemetry Python SDK from PyPI into .deploy-cache/venv.
# Later connectors add their services here (see deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The real Prometheus scrapes `tidemark serve` in pipelines/tests/server.rs.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# ...and remote-writes the node exporter's metrics into a pipeline.
command -v prometheus-node-exporter >/dev/null 2>&1 || need_apt+=(prometheus-node-exporter)
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

# The OpenTelemetry Python SDK, a real OTLP exporter for the server tests,
# in a virtual environment of the project's own (pinned versions).
venv=.deploy-cache/venv
otel_version=1.45.2
if ! "$venv/bin/python" -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc" >/dev/null 2>&1 \
   || [ "$("$venv/bin/pip" show opentelemetry-sdk 2>/dev/null | awk '/^Version/ {print $2}')" != "$otel_version" ]; then
  echo "deploy/test.sh: installing the OpenTelemetry Python SDK $otel_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "opentelemetry-sdk==$otel_version" "opentelemetry-exporter-otlp-proto-grpc==$otel_version"
fi

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked
