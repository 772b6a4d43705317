#!/usr/bin/env bash
# Prints the path of a Helm v3 binary for the chart tests and `make lint`: HELM if set, a
# `helm` on PATH when its version fits (v3, at least $HELM_MIN), else one built once from the
# Go module proxy with `go install` (needs Go; no release downloads).
#   scripts/helm.sh              the binary's path (builds it if needed)
#   scripts/helm.sh --available  exit 0 if a binary can be had (found, cached, or Go to build it)
source "$(dirname "$0")/common.sh"
HELM_VERSION="v3.22.0"
HELM_MIN="3.14"
HELM_BIN="$CACHE_DIR/helm-$HELM_VERSION/bin/helm"

# fits BIN: BIN runs and is Helm v3.x with x >= the minimum minor
fits() {
  local v
  v="$("$1" version --template '{{.Version}}' 2>/dev/null)" || return 1
  [[ "$v" =~ ^v3\.([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge "${HELM_MIN#3.}" ]
}

found() {
  if [ -n "${HELM:-}" ]; then echo "$HELM"; return 0; fi
  local on_path
  on_path="$(command -v helm 2>/dev/null || true)"
  if [ -n "$on_path" ] && fits "$on_path"; then echo "$on_path"; return 0; fi
  if [ -x "$HELM_BIN" ]; then echo "$HELM_BIN"; return 0; fi
  return 1
}

if [ "${1:-}" = "--available" ]; then
  found >/dev/null || command -v go >/dev/null
  exit $?
fi
if found; then exit 0; fi
command -v go >/dev/null || { log "need Helm v$HELM_MIN+ on PATH, or Go to build Helm $HELM_VERSION"; exit 1; }
mkdir -p "$CACHE_DIR"
log "building helm $HELM_VERSION with go install (first run only, a few minutes)"
if ! GOBIN="$(dirname "$HELM_BIN")" GOPATH="$CACHE_DIR/go" GOCACHE="$CACHE_DIR/go-build" GOFLAGS=-modcacherw \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" > "$CACHE_DIR/helm-build.log" 2>&1; then
    tail -20 "$CACHE_DIR/helm-build.log" >&2
    exit 1
fi
echo "$HELM_BIN"
