#!/usr/bin/env bash
# A local secured 3-node Kafka cluster (KRaft, each node broker+controller, 127.0.0.1) from the
# same Maven jars as scripts/kafka.sh, for the cluster tests.
#   scripts/kafka_cluster.sh start | stop | status | node-start N | node-kill N
# Per node N (1..3), from PAYFLOW_CLUSTER_PORT_BASE (B, default 29092):
#   B+N-1  CLIENT    SASL_SSL, SCRAM-SHA-512 and SCRAM-SHA-256 (users created at format time)
#   B+2+N  MTLS      SSL, client certificate required
#   B+5+N  INTERNAL  PLAINTEXT, inter-broker only
#   B+8+N  CONTROLLER
# Certificates (scripts/test_certs.py) and the password are made fresh at each start into the run
# dir, and written to $RUN_DIR/kafka-cluster/cluster.env for the tests to source.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BASE="${PAYFLOW_CLUSTER_PORT_BASE:-29092}"
CDIR="$RUN_DIR/kafka-cluster"
ENVFILE="$CDIR/cluster.env"
NODES=(1 2 3)
SCRAM_USER=payflow

client_port() { echo $((BASE + $1 - 1)); }
mtls_port() { echo $((BASE + 2 + $1)); }
internal_port() { echo $((BASE + 5 + $1)); }
controller_port() { echo $((BASE + 8 + $1)); }
node_dir() { echo "$CDIR/node$1"; }
join() { local IFS=,; echo "$*"; }

write_node_config() {
  local n="$1" dir voters=()
  dir="$(node_dir "$n")"
  mkdir -p "$dir/data"
  for i in "${NODES[@]}"; do voters+=("$i@127.0.0.1:$(controller_port "$i")"); done
  cat > "$dir/server.properties" <<CONF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(join "${voters[@]}")
listeners=CLIENT://127.0.0.1:$(client_port "$n"),MTLS://127.0.0.1:$(mtls_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=CLIENT://127.0.0.1:$(client_port "$n"),MTLS://127.0.0.1:$(mtls_port "$n"),INTERNAL://127.0.0.1:$(internal_port "$n")
listener.security.protocol.map=CLIENT:SASL_SSL,MTLS:SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.client.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.mtls.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$CDIR/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CDIR/tls/ca.pem
log.dirs=$dir/data
num.partitions=4
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
unclean.leader.election.enable=false
CONF
  kafka_write_log_config "$dir" "$dir/broker.log"
}

node_start() {
  local n="$1" dir pid
  dir="$(node_dir "$n")"
  if pid_alive "$(read_pid "$dir/broker.pid")"; then
    log "node $n already running (pid $(read_pid "$dir/broker.pid"))"
    return 0
  fi
  kafka_write_log_config "$dir" "$dir/broker.log"
  log "starting Kafka $KAFKA_VERSION node $n: SASL_SSL 127.0.0.1:$(client_port "$n"), mTLS 127.0.0.1:$(mtls_port "$n")"
  setsid bash -c "exec java -Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true '$KAFKA_LOG_OPT' \
       -cp '$KAFKA_LIBS/*' kafka.Kafka '$dir/server.properties'" >>"$dir/stdout.log" 2>&1 < /dev/null &
  echo $! > "$dir/broker.pid"
}

node_wait() {
  local n="$1" dir
  dir="$(node_dir "$n")"
  if ! "$PYTHON" "$ROOT/scripts/wait_for_kafka.py" "127.0.0.1:$(internal_port "$n")" --timeout 120 \
      --pid "$(read_pid "$dir/broker.pid")"; then
    log "node $n did not become ready; last lines of $dir/broker.log:"
    tail -n 40 "$dir/broker.log" >&2 || true
    tail -n 20 "$dir/stdout.log" >&2 || true
    return 1
  fi
}

start() {
  local n running=0
  for n in "${NODES[@]}"; do pid_alive "$(read_pid "$(node_dir "$n")/broker.pid")" && running=$((running + 1)); done
  if [ "$running" = 3 ] && [ -f "$ENVFILE" ]; then
    log "cluster already running; settings in $ENVFILE"
    return 0
  fi
  [ "$running" = 0 ] || stop
  for n in "${NODES[@]}"; do
    for p in "$(client_port "$n")" "$(mtls_port "$n")" "$(internal_port "$n")" "$(controller_port "$n")"; do
      if port_in_use "$p"; then
        log "port $p is taken by another process: stop it or set PAYFLOW_CLUSTER_PORT_BASE"
        return 1
      fi
    done
  done
  kafka_mvn_fetch
  # every start is a fresh cluster: new certificates, new password, empty logs
  rm -rf "$CDIR" && mkdir -p "$CDIR/tls" && chmod 700 "$CDIR"
  local venv_python="$PYTHON"  # test_certs.py needs the `cryptography` package of the project's venv
  [ -x "$ROOT/.venv/bin/python" ] && venv_python="$ROOT/.venv/bin/python"
  "$venv_python" "$ROOT/scripts/test_certs.py" "$CDIR/tls"
  local password cluster_id
  password="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))')"
  ( umask 077; printf '%s\n' "$password" > "$CDIR/password" )
  for n in "${NODES[@]}"; do write_node_config "$n"; done
  kafka_write_log_config "$CDIR" "$CDIR/tools.log"
  cluster_id="$(kafka_java "$KAFKA_LOG_OPT" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
  for n in "${NODES[@]}"; do
    kafka_java "$KAFKA_LOG_OPT" kafka.tools.StorageTool format -t "$cluster_id" -c "$(node_dir "$n")/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$password]" \
      --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$password]" > "$(node_dir "$n")/format.log" 2>&1 || {
        cat "$(node_dir "$n")/format.log" >&2; log "formatting node $n failed"; return 1; }
  done
  for n in "${NODES[@]}"; do node_start "$n"; done
  for n in "${NODES[@]}"; do node_wait "$n" || { stop; return 1; }; done
  local clients=() mtls=()
  for n in "${NODES[@]}"; do clients+=("127.0.0.1:$(client_port "$n")"); mtls+=("127.0.0.1:$(mtls_port "$n")"); done
  ( umask 077; cat > "$ENVFILE" <<ENV
PAYFLOW_CLUSTER_DIR=$CDIR
PAYFLOW_CLUSTER_RUN_DIR=$RUN_DIR
PAYFLOW_CLUSTER_PORT_BASE=$BASE
PAYFLOW_CLUSTER_KAFKA_VERSION=$KAFKA_VERSION
PAYFLOW_CLUSTER_BOOTSTRAP=$(join "${clients[@]}")
PAYFLOW_CLUSTER_MTLS_BOOTSTRAP=$(join "${mtls[@]}")
PAYFLOW_CLUSTER_CAFILE=$CDIR/tls/ca.pem
PAYFLOW_CLUSTER_OTHER_CAFILE=$CDIR/tls/other-ca.pem
PAYFLOW_CLUSTER_CLIENT_CERTFILE=$CDIR/tls/client.pem
PAYFLOW_CLUSTER_CLIENT_KEYFILE=$CDIR/tls/client.key
PAYFLOW_CLUSTER_USERNAME=$SCRAM_USER
PAYFLOW_CLUSTER_PASSWORD=$password
PAYFLOW_CLUSTER_PASSWORD_FILE=$CDIR/password
ENV
  )
  log "cluster ready: SASL_SSL $(join "${clients[@]}"); settings in $ENVFILE"
}

stop() {
  # TERM every node first: stopped one by one, the last would wait for a quorum already gone
  local n pid
  for n in "${NODES[@]}"; do
    pid="$(read_pid "$(node_dir "$n")/broker.pid")"
    pid_alive "$pid" && { kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; }
  done
  for n in "${NODES[@]}"; do stop_pid "$(node_dir "$n")/broker.pid" "kafka node $n"; done
}

status() {
  local n pid
  for n in "${NODES[@]}"; do
    pid="$(read_pid "$(node_dir "$n")/broker.pid")"
    if pid_alive "$pid"; then echo "kafka node $n: running (pid $pid)"; else echo "kafka node $n: stopped"; fi
  done
}

node_kill() {
  local pid
  pid="$(read_pid "$(node_dir "$1")/broker.pid")"
  if pid_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    for _ in $(seq 1 40); do pid_alive "$pid" || break; sleep 0.25; done
  fi
  rm -f "$(node_dir "$1")/broker.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  node-start) node_start "$2" && node_wait "$2" ;;
  node-kill) node_kill "$2" ;;
  *) echo "usage: $0 start|stop|status|node-start N|node-kill N" >&2; exit 2 ;;
esac
