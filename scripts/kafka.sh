#!/usr/bin/env bash
# Local Apache Kafka (KRaft, single node, 127.0.0.1) from the broker jars on Maven Central.
#   scripts/kafka.sh fetch | start | stop | restart | status
# With PAYFLOW_KAFKA_BOOTSTRAP set, the user has a cluster: start and stop do nothing.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PIDFILE="$KAFKA_DIR/broker.pid"
LOGFILE="$KAFKA_DIR/broker.log"

fetch() { kafka_mvn_fetch; }

write_config() {
  mkdir -p "$KAFKA_DIR/data"
  cat > "$KAFKA_DIR/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.cleaner.enable=true
CONF
  kafka_write_log_config "$KAFKA_DIR" "$LOGFILE"
}

java_cmd() { kafka_java "$KAFKA_LOG_OPT" "$@"; }

start() {
  if [ -n "${PAYFLOW_KAFKA_BOOTSTRAP:-}" ]; then
    log "PAYFLOW_KAFKA_BOOTSTRAP=$PAYFLOW_KAFKA_BOOTSTRAP: using that cluster, starting nothing"
    return 0
  fi
  if pid_alive "$(read_pid "$PIDFILE")"; then
    log "Kafka already running (pid $(read_pid "$PIDFILE")) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  if port_in_use "$KAFKA_PORT"; then
    log "port $KAFKA_PORT is taken by another process: stop it or set PAYFLOW_LOCAL_KAFKA_PORT"
    return 1
  fi
  fetch
  # a data dir formatted by another Kafka version is not always readable: start it afresh
  if [ -f "$KAFKA_DIR/data/meta.properties" ] && [ "$(cat "$KAFKA_DIR/kafka-version" 2>/dev/null)" != "$KAFKA_VERSION" ]; then
    log "run dir was formatted by Kafka $(cat "$KAFKA_DIR/kafka-version" 2>/dev/null || echo '?'): formatting afresh for $KAFKA_VERSION"
    rm -rf "$KAFKA_DIR/data"
  fi
  write_config
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >/dev/null
    echo "$KAFKA_VERSION" > "$KAFKA_DIR/kafka-version"
  fi
  : > "$LOGFILE"
  log "starting Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT, log in $LOGFILE"
  setsid bash -c "exec java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
       '$KAFKA_LOG_OPT' \
       -cp '$KAFKA_LIBS/*' kafka.Kafka '$KAFKA_DIR/server.properties'" \
       >"$KAFKA_DIR/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  if ! "$PYTHON" "$ROOT/scripts/wait_for_kafka.py" "127.0.0.1:$KAFKA_PORT" --timeout 90 --pid "$(read_pid "$PIDFILE")"; then
    log "Kafka did not become ready; last lines of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2 || true
    tail -n 20 "$KAFKA_DIR/stdout.log" >&2 || true
    stop_pid "$PIDFILE" kafka
    return 1
  fi
  log "Kafka ready"
}

stop() {
  [ -n "${PAYFLOW_KAFKA_BOOTSTRAP:-}" ] && return 0
  stop_pid "$PIDFILE" kafka
}

status() {
  if pid_alive "$(read_pid "$PIDFILE")"; then echo "kafka: running (pid $(read_pid "$PIDFILE"))"; else echo "kafka: stopped"; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|restart|status" >&2; exit 2 ;;
esac
