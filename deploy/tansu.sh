#!/usr/bin/env bash
# Installs tansu, a Kafka-compatible broker, and starts it as a process on a
# local port, for the Kafka tests and examples (no Docker engine needed).
#
#   deploy/tansu.sh start [PORT] [STORAGE]   # prints the bootstrap address
#   deploy/tansu.sh stop [PORT]
#
# PORT defaults to 9092; STORAGE to memory://tansu/ (fast, gone on stop). For
# a broker that survives a restart, give s3://BUCKET/ with the AWS_*
# endpoint variables and AWS_ALLOW_HTTP=true set for a local S3 server.
#
# `cargo install tansu --locked --features dynostore` takes about 20 minutes
# on a 2-core machine, so the binary is cached outside the checkout, in
# ${TIDEMARK_CACHE:-~/.cache/tidemark}/tansu-VERSION, and reused by every
# clone on the machine.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

version=0.6.0
cache="${TIDEMARK_CACHE:-$HOME/.cache/tidemark}"
root="$cache/tansu-$version"
bin="$root/bin/tansu"
action="${1:-start}"
port="${2:-9092}"
storage="${3:-memory://tansu/}"
run="$cache/run"
mkdir -p "$run"

install() {
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
    return
  fi
  echo "deploy/tansu.sh: installing tansu $version into $root (about 20 minutes on 2 cores)" >&2
  cargo install tansu --version "=$version" --locked --features dynostore --root "$root" >&2
}

case "$action" in
  start)
    install
    pidfile="$run/tansu-$port.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "127.0.0.1:$port"
      exit 0
    fi
    "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$run/tansu-$port.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if grep -q "ready in" "$run/tansu-$port.log" 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "deploy/tansu.sh: tansu did not start; its log:" >&2
    cat "$run/tansu-$port.log" >&2
    exit 1
    ;;
  stop)
    pidfile="$run/tansu-$port.pid"
    stop_pidfile "$pidfile"
    ;;
  *)
    echo "usage: deploy/tansu.sh start|stop [PORT] [STORAGE]" >&2
    exit 2
    ;;
esac
