# payflow: `make demo` and `make test` work on a fresh machine with nothing typed first.
SHELL := /bin/bash
PREREQS := scripts/check_prereqs.sh
STACK := scripts/stack.sh
LOCK := requirements/lock.txt
export PAYFLOW_CACHE_DIR ?= $(CURDIR)/.cache

# Python 3.11-3.13. By default the newest found (python3.13/3.12/3.11 on PATH, then under
# ~/.pyenv/versions), in .venv, which is rebuilt when that version changes. PYTHON=python3.12
# (a name or a path) picks one, in a venv of its own (.venv-3.12), so versions do not trample
# each other.
ifeq ($(origin PYTHON),undefined)
  override PYTHON := $(shell $(PREREQS) --find-python)
  PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
  VENV ?= .venv
else
  override PYTHON := $(shell $(PREREQS) --resolve $(PYTHON))
  PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
  VENV ?= .venv-$(PYVER)
endif
export PYTHON
PY := $(VENV)/bin/python
UV := $(PAYFLOW_CACHE_DIR)/uv-venv/bin/uv
PIP := $(VENV)/bin/pip --disable-pip-version-check

.PHONY: test-cluster help install kafka-jars bq-emulator helm up down status \
        test test-unit chaos campaign demo bench fraud-eval lint lock lock-upgrade clean

help:
	@echo "make demo    run the whole pipeline on local Kafka + DuckDB and reconcile (needs Python 3.11-3.13, Java 17+, mvn, a C compiler)"
	@echo "make test    install everything, start Kafka + BigQuery emulator, run all tests, stop them"
	@echo "make bench   throughput / latency / memory benchmark (prints a table, writes bench-results.json)"
	@echo "make fraud-eval   fraud scoring on labelled typology traffic through the real worker (docs/fraud.md)"
	@echo "make campaign RUNS=3   an outside scale-in/out campaign on BigQuery, checked against its own manifest (~5 min a run)"
	@echo "make up | down | status   the local stack"
	@echo "make lock    re-resolve $(LOCK) after a change to setup.cfg (lock-upgrade: newest of everything)"
	@echo "PYTHON=python3.12 make ...   another Python (own venv .venv-3.12); PAYFLOW_PURE_PYTHON=1 installs uncompiled"

# one line per missing tool, before anything is installed
prereqs-%:
	@$(PREREQS) $*

# The venv of this Python version: kept when it is that version, made anew when not.
$(VENV)/.python-$(PYVER):
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$(PYVER)" ]; then :; \
	else echo "creating $(VENV) with $(PYTHON) ($(PYVER))"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	touch $@

# Everything from the lock, hash-checked (by uv: about ten times faster than pip here), then
# payflow itself on top without resolving again.
# Any change to payflow/stages/*.py reinstalls, which compiles the per-event stages again
# (setup.py: mypyc); a compiled module older than its source would run the old code, and the
# package refuses to import one (payflow/runtime/process.py). PAYFLOW_PURE_PYTHON=1 installs uncompiled.
$(VENV)/.installed: $(VENV)/.python-$(PYVER) $(LOCK) setup.cfg pyproject.toml setup.py $(wildcard payflow/stages/*.py) | $(UV)
	$(PIP) install -q --upgrade pip==26.3
	$(UV) pip install -q --python $(PY) --require-hashes -r $(LOCK)
	@# a compiled stage whose source was merged or renamed away would still import: removed
	@for so in payflow/stages/*.so; do [ -e "$$so" ] || continue; \
		[ -e "payflow/stages/$$(basename "$$so" | cut -d. -f1).py" ] || rm -f "$$so"; done
	PYTHONWARNINGS=ignore $(PIP) install -q --no-deps --no-build-isolation -e .  # (setuptools' notes on editable installs)
	touch $@

kafka-jars:
	scripts/kafka.sh fetch

bq-emulator: | $(UV)
	scripts/bqemulator.sh install

helm:
	scripts/helm.sh >/dev/null

# what `make test` needs; `make demo` needs only the venv and the Kafka jars
install: $(VENV)/.installed kafka-jars bq-emulator helm

up: install
	$(STACK) up

down:
	$(STACK) down

status:
	@$(STACK) status

# Unit, integration, end-to-end and fault tests against the real broker and emulator. The unit
# tests run first, on both cores (pytest-xdist: CPU only, no service); then everything that needs
# the broker or the emulator, two at a time (each test has its own topics, group, state and
# warehouse), and last the tests marked `alone` one at a time: one restarts the shared broker,
# the others time a bound. With PYTEST_ARGS (a path, -k ...), one run with the stack.
TEST_MARKS = not open_issue and not chaos_only
test: prereqs-test install
ifeq ($(strip $(PYTEST_ARGS)),)
	$(PY) -m pytest -ra -p no:cacheprovider -n 2 --durations=10 -m '$(TEST_MARKS)' tests/unit
	$(STACK) run -- bash -c "$(PY) -m pytest -ra -p no:cacheprovider -n 2 --durations=25 -m '($(TEST_MARKS)) and not alone' --ignore=tests/unit && $(PY) -m pytest -ra -p no:cacheprovider --durations=10 -m '($(TEST_MARKS)) and alone' --ignore=tests/unit"
else
	$(STACK) run -- $(PY) -m pytest -ra -p no:cacheprovider --durations=25 -m '$(TEST_MARKS)' $(PYTEST_ARGS)
endif

test-unit: prereqs-demo $(VENV)/.installed
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

# The secured 3-broker KRaft cluster (SASL_SSL, mTLS, RF 3): started, tested, stopped.
test-cluster: prereqs-test $(VENV)/.installed kafka-jars
	PY=$(PY) scripts/test_cluster.sh $(PYTEST_ARGS)

# the fault tests, with 20 two-worker starts where the raw topic appears after the workers
# (tests/fault/test_start_race.py; `make test` runs 2)
chaos: export PAYFLOW_TEST_START_RACE_RUNS ?= 20
chaos: prereqs-test install
	$(STACK) run -- $(PY) -m pytest -ra -m fault $(PYTEST_ARGS)

# An outside campaign (scripts/campaign): workers joining and SIGTERMed under traffic on the
# BigQuery emulator, on a second stack of its own; not a test (minutes per run).
RUNS ?= 3
campaign: prereqs-test install
	scripts/campaign/run.sh $(RUNS)

demo: prereqs-demo $(VENV)/.installed kafka-jars
	$(STACK) run --no-bq -- $(PY) -m payflow.demo

bench: prereqs-demo $(VENV)/.installed kafka-jars
	$(STACK) run --no-bq -- $(PY) -m payflow.bench

# Fraud scoring measured on labelled traffic payflow did not write (docs/fraud.md); not a test.
fraud-eval: prereqs-demo $(VENV)/.installed kafka-jars
	$(STACK) run --no-bq -- $(PY) -m payflow.fraudeval.run $(FRAUD_EVAL_ARGS)

lint: prereqs-lint $(VENV)/.installed helm
	$(VENV)/bin/python scripts/lint_imports.py
	$(VENV)/bin/hadolint Dockerfile
	$$(scripts/helm.sh) lint --strict --kube-version 1.31.0 helm/payflow --set secrets.create.hmacKeys=lint-1:$$(printf '0%.0s' {1..64})

# The lock: one file for Python 3.11-3.13 (markers where they differ), every package pinned
# with hashes, payflow's build requirements included. uv (pinned) runs from a venv of its own.
UV_COMPILE = $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--extra test --extra bench --extra simulate --no-emit-package payflow \
	--custom-compile-command "make lock" -o $(LOCK) setup.cfg requirements/build.in

$(UV):
	$(PYTHON) -m venv $(PAYFLOW_CACHE_DIR)/uv-venv
	$(PAYFLOW_CACHE_DIR)/uv-venv/bin/pip install -q --disable-pip-version-check uv==0.13.9

# the image's: what the worker and the simulator run, nothing for tests or builds (Dockerfile)
UV_COMPILE_IMAGE = $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--extra simulate --no-emit-package payflow --custom-compile-command "make lock" \
	-o requirements/lock-image.txt setup.cfg

# a sha256 whose hex holds a card-shaped digit run is swapped for the file's sha512
# (scripts/lock_hashes.py): no card-number-shaped digits in the repository
LOCK_HASHES := $(PY) scripts/lock_hashes.py $(LOCK) requirements/lock-image.txt

lock: $(UV) $(VENV)/.installed
	$(UV_COMPILE)
	$(UV_COMPILE_IMAGE)
	$(LOCK_HASHES)

lock-upgrade: $(UV) $(VENV)/.installed
	$(UV_COMPILE) --upgrade
	$(UV_COMPILE_IMAGE) --upgrade
	$(LOCK_HASHES)

clean: down
	rm -rf var $(VENV)
