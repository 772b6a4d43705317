#!/usr/bin/env bash
# Build the Helm v3 binary the chart tests use, once, from the Go module proxy (no Docker,
# no release downloads needed). Prints the binary's path.
source "$(dirname "$0")/common.sh"
HELM_VERSION="v3.22.0"
HELM_BIN="$CACHE_DIR/helm-$HELM_VERSION/bin/helm"
if [ ! -x "$HELM_BIN" ]; then
    command -v go >/dev/null || { log "need Go to build Helm ($HELM_VERSION)"; exit 1; }
    log "building helm $HELM_VERSION with go install (first run only, a few minutes)"
    if ! GOBIN="$(dirname "$HELM_BIN")" GOPATH="$CACHE_DIR/go" GOCACHE="$CACHE_DIR/go-build" GOFLAGS=-modcacherw \
            go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" > "$CACHE_DIR/helm-build.log" 2>&1; then
        tail -20 "$CACHE_DIR/helm-build.log" >&2
        exit 1
    fi
fi
echo "$HELM_BIN"
