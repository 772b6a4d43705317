#!/usr/bin/env bash
# The cluster tests: start the local secured 3-node cluster (scripts/kafka_cluster.sh), run
# tests/cluster against it over SASL_SSL/SCRAM-SHA-512, stop it. Extra arguments go to pytest.
#   scripts/test_cluster.sh [-k NAME ...]     (KAFKA_VERSION, PAYFLOW_CLUSTER_PORT_BASE as for the scripts)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
trap 'scripts/kafka_cluster.sh stop' EXIT
scripts/kafka_cluster.sh start
set -a
# shellcheck disable=SC1091
source "$RUN_DIR/kafka-cluster/cluster.env"
PAYFLOW_CLUSTER_ENV="$RUN_DIR/kafka-cluster/cluster.env"
PAYFLOW_KAFKA_BOOTSTRAP="$PAYFLOW_CLUSTER_BOOTSTRAP"
PAYFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL
PAYFLOW_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
PAYFLOW_KAFKA_SASL_USERNAME="$PAYFLOW_CLUSTER_USERNAME"
PAYFLOW_KAFKA_SASL_PASSWORD_FILE="$PAYFLOW_CLUSTER_PASSWORD_FILE"
PAYFLOW_KAFKA_SSL_CAFILE="$PAYFLOW_CLUSTER_CAFILE"
PAYFLOW_KAFKA_MIN_INSYNC_REPLICAS=2  # the replication factor stays the cluster default (3)
set +a
unset PAYFLOW_CLUSTER_PASSWORD  # the tests read the password from its file, like a deployment would
"$PY" -m pytest -ra -p no:cacheprovider tests/cluster "$@"
