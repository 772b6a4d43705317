#!/usr/bin/env bash
# What `make` needs before it starts, checked up front: one line per missing tool, saying
# what is missing and how to get it; exit 1 if anything is.
#   scripts/check_prereqs.sh demo|test|lint   check for that target (PYTHON names the interpreter)
#   scripts/check_prereqs.sh --find-python    print the newest python3.13/3.12/3.11 found on PATH
#                                             or under ~/.pyenv/versions/*/bin (nothing if none)
#   scripts/check_prereqs.sh --resolve NAME   NAME as a path that runs (python3.12 -> pyenv's build)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${PAYFLOW_CACHE_DIR:-$ROOT/.cache}"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SUPPORTED=(3.13 3.12 3.11)

# runs_as VERSION CMD: CMD is a working interpreter of that version (a pyenv shim for a
# version not selected is on PATH but fails, so it is run, not only looked up)
runs_as() {
  [ "$("$2" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]
}

find_python() {
  local v cand
  for v in "${SUPPORTED[@]}"; do
    for cand in "python$v" $(ls -d "$HOME"/.pyenv/versions/"$v"*/bin/python"$v" 2>/dev/null | sort -rV); do
      if runs_as "$v" "$cand"; then
        command -v "$cand"
        return 0
      fi
    done
  done
  return 1
}

# resolve NAME: NAME itself when it runs; for a pythonX.Y that does not (a pyenv shim of a
# version not selected), the pyenv build of that version; else NAME unchanged
resolve() {
  local name="$1" v cand
  if "$name" -c 'import sys' >/dev/null 2>&1; then command -v "$name"; return 0; fi
  v="${name##*python}"
  if [[ "$v" =~ ^3\.[0-9]+$ ]]; then
    for cand in $(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -rV); do
      if runs_as "$v" "$cand"; then echo "$cand"; return 0; fi
    done
  fi
  echo "$name"
}

case "${1:-}" in
  --find-python) find_python || true; exit 0 ;;
  --resolve) resolve "$2"; exit 0 ;;
esac

target="${1:-demo}"
missing=0
need() { printf 'missing: %s\n' "$*" >&2; missing=1; }

# Python 3.11-3.13 with venv (and headers when the stages are compiled)
py="${PYTHON:-}"
if [ -z "$py" ]; then
  need "Python 3.11, 3.12 or 3.13: install one (apt-get install python3.12-venv, or pyenv install 3.13) or name it with make PYTHON=/path/to/python3.X"
elif ! "$py" -c 'import sys' >/dev/null 2>&1; then
  need "Python 3.11-3.13: PYTHON=$py does not run; install 3.11, 3.12 or 3.13 or set PYTHON= to one that runs"
  py=""
elif ! "$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)' 2>/dev/null; then
  need "Python 3.11-3.13: PYTHON=$py is $("$py" --version 2>&1 | head -1); install 3.11, 3.12 or 3.13 or set PYTHON= to one"
  py=""
elif ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
  need "the venv module of $py: apt-get install python3-venv (Debian/Ubuntu names it python3.X-venv)"
fi

# Java 17+ runs the local Kafka broker; Maven fetches its jars once (skipped when cached);
# neither is needed with a broker of one's own (PAYFLOW_KAFKA_BOOTSTRAP)
if [ -n "${PAYFLOW_KAFKA_BOOTSTRAP:-}" ]; then
  :
elif ! command -v java >/dev/null 2>&1; then
  need "Java 17 or newer (runs the local Kafka broker): apt-get install openjdk-17-jre-headless, or set PAYFLOW_KAFKA_BOOTSTRAP to a broker of your own"
else
  jv="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -1)"
  if [ -z "$jv" ] || [ "$jv" -lt 17 ]; then
    need "Java 17 or newer (found ${jv:-an unknown version} at $(command -v java)): apt-get install openjdk-17-jre-headless"
  fi
fi
if [ -z "${PAYFLOW_KAFKA_BOOTSTRAP:-}" ] && [ ! -f "$CACHE_DIR/kafka-$KAFKA_VERSION/libs/.complete" ] \
    && ! command -v mvn >/dev/null 2>&1; then
  need "mvn (Maven fetches the Kafka $KAFKA_VERSION jars from Maven Central, once): apt-get install maven"
fi

# a C compiler for the compiled stages (mypyc), unless installing pure Python
if [ "${PAYFLOW_PURE_PYTHON:-}" != "1" ] && [ "$target" != "lint" ]; then
  if ! command -v "${CC:-cc}" >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    need "a C compiler (the per-event stages are compiled with mypyc): apt-get install gcc, or PAYFLOW_PURE_PYTHON=1 to install uncompiled (slower)"
  elif [ -n "$py" ] && ! "$py" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' 2>/dev/null; then
    need "Python.h for $py (the stages are compiled against it): apt-get install python3.X-dev, or PAYFLOW_PURE_PYTHON=1"
  fi
fi

# Helm for the chart tests and lint: one on PATH that fits, or Go to build it once
if [ "$target" = "test" ] || [ "$target" = "lint" ]; then
  if ! "$ROOT/scripts/helm.sh" --available 2>/dev/null; then
    need "Helm v3.14+ (the chart tests render the chart): put helm on PATH (https://helm.sh/docs/intro/install/), or install Go (apt-get install golang) to build it once"
  fi
fi

exit $missing
