# Shared paths and helpers for the local-stack scripts. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${PAYFLOW_CACHE_DIR:-$ROOT/.cache}"
RUN_DIR="${PAYFLOW_RUN_DIR:-$ROOT/var/run}"
KAFKA_VERSION="3.9.1"
KAFKA_LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_PORT="${PAYFLOW_LOCAL_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${PAYFLOW_LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DIR="$RUN_DIR/kafka"
BQ_PORT="${PAYFLOW_LOCAL_BQ_PORT:-9050}"
BQ_GRPC_PORT="${PAYFLOW_LOCAL_BQ_GRPC_PORT:-9060}"
BQ_VENV="$CACHE_DIR/bqemulator-venv"
BQ_DIR="$RUN_DIR/bqemulator"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
mkdir -p "$RUN_DIR"

log() { printf '[payflow-stack] %s\n' "$*" >&2; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_pid() { [ -f "$1" ] && cat "$1" || true; }

port_in_use() { "$PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

# stop_pid PIDFILE NAME: TERM, wait up to 30 s, then KILL; removes the pid file.
stop_pid() {
  local pidfile="$1" name="$2" pid
  pid="$(read_pid "$pidfile")"
  if pid_alive "$pid"; then
    log "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do pid_alive "$pid" || break; sleep 0.5; done
    if pid_alive "$pid"; then
      log "$name did not stop in 30 s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$pidfile"
}
