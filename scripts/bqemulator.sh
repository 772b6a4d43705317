#!/usr/bin/env bash
# Local BigQuery API emulator (bqemulator from PyPI) on loopback, in a venv of its own
# because it pins duckdb and sqlglot differently from payflow.
#   scripts/bqemulator.sh install | start | stop | status
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PIDFILE="$BQ_DIR/bqemulator.pid"
LOGFILE="$BQ_DIR/bqemulator.log"
BQ_PROJECT="${PAYFLOW_LOCAL_BQ_PROJECT:-payflow-local}"

install() {
  if [ -f "$BQ_VENV/.complete" ]; then
    return 0
  fi
  log "installing bqemulator into $BQ_VENV"
  rm -rf "$BQ_VENV"
  "$PYTHON" -m venv "$BQ_VENV"
  local pkgs=(bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy==2.4.6)
  if [ -x "$CACHE_DIR/uv-venv/bin/uv" ]; then  # made by `make`: installs in seconds
    "$CACHE_DIR/uv-venv/bin/uv" pip install -q --python "$BQ_VENV/bin/python" "${pkgs[@]}"
  else
    "$BQ_VENV/bin/pip" install -q --disable-pip-version-check "${pkgs[@]}"
  fi
  touch "$BQ_VENV/.complete"
}

# bqemulator loads DuckDB's spatial extension at start and would download it; offline it
# must come from the PyPI package's bundled file, installed into DuckDB's extension dir.
install_spatial_extension() {
  "$BQ_VENV/bin/python" - <<'PY'
import pathlib, duckdb, duckdb_extension_spatial
files = sorted(pathlib.Path(duckdb_extension_spatial.__file__).parent.rglob("spatial.duckdb_extension"))
if not files:
    raise SystemExit("duckdb-extension-spatial ships no spatial.duckdb_extension file")
duckdb.connect().execute(f"INSTALL '{files[0]}'")
PY
}

start() {
  if pid_alive "$(read_pid "$PIDFILE")"; then
    log "bqemulator already running (pid $(read_pid "$PIDFILE")) on 127.0.0.1:$BQ_PORT"
    return 0
  fi
  if port_in_use "$BQ_PORT"; then
    log "port $BQ_PORT is taken by another process: stop it or set PAYFLOW_LOCAL_BQ_PORT"
    return 1
  fi
  install
  install_spatial_extension
  mkdir -p "$BQ_DIR"
  log "starting bqemulator on 127.0.0.1:$BQ_PORT, log in $LOGFILE"
  # sitecustomize there serializes the emulator's use of its DuckDB connection (see the file).
  # Started from its run directory: its DuckDB spills to .tmp/ in its working directory (10 GB
  # in a long outside test), which was the caller's, often the repository.
  (cd "$BQ_DIR" && PYTHONPATH="$ROOT/scripts/bqemulator-site" exec setsid "$BQ_VENV/bin/bqemulator" start \
      --rest-host 127.0.0.1 --rest-port "$BQ_PORT" --grpc-host 127.0.0.1 --grpc-port "$BQ_GRPC_PORT" \
      --project "$BQ_PROJECT" --ephemeral --log-level warning --log-format console) \
      >"$LOGFILE" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 120); do
    if ! pid_alive "$(read_pid "$PIDFILE")"; then break; fi
    if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$BQ_PORT/bigquery/v2/projects/$BQ_PROJECT/datasets', timeout=2)" 2>/dev/null; then
      log "bqemulator ready"
      return 0
    fi
    sleep 0.5
  done
  log "bqemulator did not become ready; last lines of $LOGFILE:"
  tail -n 40 "$LOGFILE" >&2 || true
  stop_pid "$PIDFILE" bqemulator
  return 1
}

stop() { stop_pid "$PIDFILE" bqemulator; }

status() {
  if pid_alive "$(read_pid "$PIDFILE")"; then echo "bqemulator: running (pid $(read_pid "$PIDFILE"))"; else echo "bqemulator: stopped"; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
