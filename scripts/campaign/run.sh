#!/usr/bin/env bash
# An outside campaign against payflow on the BigQuery emulator: RUNS runs of one scenario
# (scale by default: 3 workers, two SIGTERMed at once, a join with a SIGTERM during it, a
# SIGTERM right after a start, two joining together, scale-in to one; traffic from the
# campaign's own aiokafka producer throughout), each on a fresh second stack on its own
# ports (the emulator grows with every dataset). Every table is checked against the
# producer's manifest: one row per payment, sums per currency, DLQ and dedup counts, lag 0.
#   scripts/campaign/run.sh [RUNS] [KIND]      (make campaign RUNS=6)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RUNS="${1:-3}"
KIND="${2:-scale}"
export PAYFLOW_LOCAL_KAFKA_PORT="${PAYFLOW_LOCAL_KAFKA_PORT:-19092}"
export PAYFLOW_LOCAL_KAFKA_CONTROLLER_PORT="${PAYFLOW_LOCAL_KAFKA_CONTROLLER_PORT:-19093}"
export PAYFLOW_LOCAL_BQ_PORT="${PAYFLOW_LOCAL_BQ_PORT:-19050}"
export PAYFLOW_LOCAL_BQ_GRPC_PORT="${PAYFLOW_LOCAL_BQ_GRPC_PORT:-19060}"
export PAYFLOW_CAMPAIGN_DIR="${PAYFLOW_CAMPAIGN_DIR:-$REPO/var/campaign}"
export PAYFLOW_RUN_DIR="$PAYFLOW_CAMPAIGN_DIR/stack"
PY="$REPO/.venv/bin/python"
mkdir -p "$PAYFLOW_CAMPAIGN_DIR"
summary="$PAYFLOW_CAMPAIGN_DIR/summary.txt"
: > "$summary"
broken=0
trap '"$REPO/scripts/stack.sh" down >/dev/null 2>&1' EXIT
for i in $(seq 1 "$RUNS"); do
  name="c${i}$(date +%H%M%S)"
  "$REPO/scripts/stack.sh" down >/dev/null 2>&1
  rm -rf "$PAYFLOW_RUN_DIR"
  "$REPO/scripts/stack.sh" up > "$PAYFLOW_CAMPAIGN_DIR/$name.stack.log" 2>&1 || { echo "$name: the stack did not start" | tee -a "$summary"; broken=1; continue; }
  PORTBASE="${PORTBASE:-16100}" timeout 900 "$PY" "$HERE/scenario.py" "$name" --kind "$KIND" > "$PAYFLOW_CAMPAIGN_DIR/$name.out" 2>&1
  verdict="$(grep -h '^VERDICT' "$PAYFLOW_CAMPAIGN_DIR/$name.out" || echo 'VERDICT: none (see the log)')"
  echo "$name ($KIND): $verdict, $(grep -c MISMATCH "$PAYFLOW_CAMPAIGN_DIR/$name.out") sum mismatches, $(grep -h '^lag' "$PAYFLOW_CAMPAIGN_DIR/$name.out")" | tee -a "$summary"
  case "$verdict" in *HELD*) ;; *) broken=1 ;; esac
done
echo "logs and manifests: $PAYFLOW_CAMPAIGN_DIR"
exit "$broken"
