#!/usr/bin/env bash
# Installs what the tests need and runs them all: formatting, lints, and the
# whole test suite. This is the command the README gives and .ci/run calls.
#
# On a fresh Debian machine it needs Rust (1.88 or newer, from rustup); it
# installs with apt-get what is missing of: a C compiler, pkg-config, and
# Prometheus (a real scraper for the /metrics test). Later connectors add
# their services here (see deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# The real Prometheus scrapes `tidemark serve` in pipelines/tests/server.rs.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
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

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked
