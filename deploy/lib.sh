# Shared by the deploy/ service scripts (sourced, not run).

# Stops the process whose id is in the file $1 and waits until it has
# exited (10 s, then SIGKILL), so its port is free for a restart.
stop_pidfile() {
  local pidfile="$1" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}
