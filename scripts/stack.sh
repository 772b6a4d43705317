#!/usr/bin/env bash
# The whole local stack (Kafka broker + BigQuery emulator).
#   scripts/stack.sh up | down | status
#   scripts/stack.sh run [--no-bq] -- CMD...   start what is not running, run CMD, stop what
#                                              this call started (also when CMD fails); exit with CMD's status
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$ROOT/scripts"

case "${1:-}" in
  up) "$HERE/kafka.sh" start && "$HERE/bqemulator.sh" start ;;
  down) "$HERE/bqemulator.sh" stop; "$HERE/kafka.sh" stop ;;
  status) "$HERE/kafka.sh" status; "$HERE/bqemulator.sh" status ;;
  run)
    shift
    with_bq=1
    if [ "${1:-}" = "--no-bq" ]; then with_bq=0; shift; fi
    [ "${1:-}" = "--" ] && shift
    started=()
    cleanup() {
      for svc in "${started[@]}"; do "$HERE/$svc.sh" stop || true; done
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    if [ -z "${PAYFLOW_KAFKA_BOOTSTRAP:-}" ] && ! pid_alive "$(read_pid "$KAFKA_DIR/broker.pid")"; then
      started+=(kafka)
      "$HERE/kafka.sh" start
    fi
    if [ "$with_bq" = 1 ] && ! pid_alive "$(read_pid "$BQ_DIR/bqemulator.pid")"; then
      started+=(bqemulator)
      "$HERE/bqemulator.sh" start
    fi
    set +e
    "$@"
    status=$?
    set -e
    exit $status
    ;;
  *) echo "usage: $0 up|down|status|run [--no-bq] -- CMD..." >&2; exit 2 ;;
esac
