# Shared paths and helpers for the local-stack scripts. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${PAYFLOW_CACHE_DIR:-$ROOT/.cache}"
RUN_DIR="${PAYFLOW_RUN_DIR:-$ROOT/var/run}"
# The local broker's version: the newest Kafka 4.x line by default; KAFKA_VERSION=3.9.1 (or any
# 3.x/4.x release on Maven Central) overrides it. Jars are cached per version.
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_MAJOR="${KAFKA_VERSION%%.*}"
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

# kafka_mvn_fetch: the broker jars of $KAFKA_VERSION into $KAFKA_LIBS (once per version).
# Kafka 4 logs through log4j2 (the pom's default binding); 3.x through reload4j.
kafka_mvn_fetch() {
  if [ -f "$KAFKA_LIBS/.complete" ]; then
    log "Kafka $KAFKA_VERSION jars already in $KAFKA_LIBS"
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS" && mkdir -p "$KAFKA_LIBS" "$CACHE_DIR"
  local binding=()
  if [ "$KAFKA_MAJOR" -lt 4 ]; then
    binding=(-Dlog.binding.groupId=org.slf4j -Dlog.binding.artifactId=slf4j-reload4j -Dlog.binding.version=1.7.36
             -Dlog.backend.groupId=ch.qos.reload4j -Dlog.backend.artifactId=reload4j -Dlog.backend.version=1.2.19)
  fi
  if ! mvn -B --no-transfer-progress -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" \
      -Dkafka.version="$KAFKA_VERSION" "${binding[@]}" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" > "$CACHE_DIR/kafka-mvn-$KAFKA_VERSION.log" 2>&1; then
    tail -n 30 "$CACHE_DIR/kafka-mvn-$KAFKA_VERSION.log" >&2
    log "mvn could not fetch the Kafka $KAFKA_VERSION jars (log: $CACHE_DIR/kafka-mvn-$KAFKA_VERSION.log)"
    return 1
  fi
  touch "$KAFKA_LIBS/.complete"
}

# kafka_write_log_config DIR LOGFILE: the broker's logging config for this Kafka line, and sets
# KAFKA_LOG_OPT to the JVM flag that points at it (log4j2 for 4.x, log4j 1 syntax for 3.x).
kafka_write_log_config() {
  local dir="$1" logfile="$2"
  if [ "$KAFKA_MAJOR" -ge 4 ]; then
    cat > "$dir/log4j2.properties" <<CONF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $logfile
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.storage.name = org.apache.kafka.storage
logger.storage.level = WARN
CONF
    KAFKA_LOG_OPT="-Dlog4j2.configurationFile=file:$dir/log4j2.properties"
  else
    cat > "$dir/log4j.properties" <<CONF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$logfile
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.storage=WARN
CONF
    KAFKA_LOG_OPT="-Dlog4j.configuration=file:$dir/log4j.properties"
  fi
}

# kafka_java LOGOPT CLASS ARGS...: a Kafka main class on the cached jars, in the foreground.
kafka_java() {
  local logopt="$1"; shift
  java -Xms128m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true "$logopt" -cp "$KAFKA_LIBS/*" "$@"
}

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
