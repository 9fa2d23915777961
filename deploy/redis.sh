#!/usr/bin/env bash
# Starts a private Redis server (Debian's redis-server, installed with
# apt-get where missing) on a local port, for the `redis` sink's tests:
# nothing kept on disk. A private server can be restarted by a test
# without touching the machine's own.
#
#   deploy/redis.sh start [PORT]   # prints the URL
#   deploy/redis.sh stop [PORT]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action="${1:-start}"
port="${2:-16379}"
run="${TIDEMARK_CACHE:-$HOME/.cache/tidemark}/run"
mkdir -p "$run"
pidfile="$run/redis-$port.pid"

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
fi

case "$action" in
  start)
    if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
      redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize yes --pidfile "$pidfile" --logfile "$run/redis-$port.log" --dir "$run"
      for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
      done
    fi
    redis-cli -p "$port" ping >/dev/null || { echo "deploy/redis.sh: redis did not start; see $run/redis-$port.log" >&2; exit 1; }
    echo "redis://127.0.0.1:$port/"
    ;;
  stop)
    stop_pidfile "$pidfile"
    ;;
  *)
    echo "usage: deploy/redis.sh start|stop [PORT]" >&2
    exit 2
    ;;
esac
