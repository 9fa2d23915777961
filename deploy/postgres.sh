#!/usr/bin/env bash
# Starts a private PostgreSQL cluster (Debian's PostgreSQL server, installed
# with apt-get where missing) on a local port, for the `timescaledb` sink's
# tests: trust authentication on 127.0.0.1, data under the machine-wide
# cache (/var/lib/postgresql as root), fsync off (tests, not production). A private cluster can be
# stopped and started by a test without touching the machine's own server.
# TLS is on, with a self-signed certificate for localhost and 127.0.0.1
# (`cert` prints its path, to use as a CA file).
#
#   deploy/postgres.sh start [PORT]   # prints a connection URL
#   deploy/postgres.sh stop [PORT]    # fast shutdown, data kept
#   deploy/postgres.sh wipe [PORT]    # stop and delete its data
#   deploy/postgres.sh cert [PORT]    # the server certificate's path
set -euo pipefail
. "$(dirname "$0")/lib.sh"

action="${1:-start}"
port="${2:-15432}"
run="${TIDEMARK_CACHE:-$HOME/.cache/tidemark}/run"
mkdir -p "$run"
# As root the server runs as the postgres user, who cannot enter /root.
if [ "$(id -u)" = 0 ]; then data="/var/lib/postgresql/tidemark-$port"; else data="$run/postgres-$port"; fi

bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ -z "$(bindir)" ]; then
  apt_install postgresql
fi
bin="$(bindir)"

# PostgreSQL will not run as root: run it as the postgres user there.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url="postgresql://postgres@127.0.0.1:$port/postgres"
case "$action" in
  start)
    if [ ! -f "$data/PG_VERSION" ]; then
      mkdir -p "$data"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
      as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if [ ! -f "$data/server.crt" ]; then
      command -v openssl >/dev/null 2>&1 || apt_install openssl
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$data/server.key" -out "$data/server.crt" 2>/dev/null
      chmod 600 "$data/server.key"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$data/server.key" "$data/server.crt"; fi
    fi
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$data" -l "$data/log" -w -t 60 start \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c fsync=off -c max_connections=200 -c ssl=on" >/dev/null
    fi
    echo "$url"
    ;;
  cert)
    echo "$data/server.crt"
    ;;
  stop)
    [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  wipe)
    [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$data"
    ;;
  *)
    echo "usage: deploy/postgres.sh start|stop|wipe|cert [PORT]" >&2
    exit 2
    ;;
esac
