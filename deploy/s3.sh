#!/usr/bin/env bash
# Starts a local S3-compatible server, moto (from PyPI, in the project's
# venv), as a process on a local port: for the tests that need an object
# store (a Kafka broker that survives a restart, the Parquet archive).
#
#   deploy/s3.sh start [PORT]   # prints the endpoint URL
#   deploy/s3.sh stop [PORT]
#
# Clients use the endpoint with any access key (AWS_ACCESS_KEY_ID=test,
# AWS_SECRET_ACCESS_KEY=test, AWS_DEFAULT_REGION=us-east-1) over plain
# HTTP (AWS_ALLOW_HTTP=true for object_store). Objects live in memory.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

version=5.2.5
venv=.deploy-cache/venv
action="${1:-start}"
port="${2:-19100}"
run="${TIDEMARK_CACHE:-$HOME/.cache/tidemark}/run"
mkdir -p "$run"
pidfile="$run/moto-$port.pid"

case "$action" in
  start)
    if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF "moto==$version"; then
      echo "deploy/s3.sh: installing moto[server] $version into $venv" >&2
      [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
      "$venv/bin/pip" install -q "moto[server]==$version"
    fi
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "http://127.0.0.1:$port"
      exit 0
    fi
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/moto-$port.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
      sleep 0.1
    done
    echo "deploy/s3.sh: moto did not start; its log:" >&2
    cat "$run/moto-$port.log" >&2
    exit 1
    ;;
  stop)
    stop_pidfile "$pidfile"
    ;;
  *)
    echo "usage: deploy/s3.sh start|stop [PORT]" >&2
    exit 2
    ;;
esac
