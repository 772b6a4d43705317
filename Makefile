# payflow: `make demo` and `make test` work on a fresh machine with nothing typed first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STACK := scripts/stack.sh
export PAYFLOW_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: help install up down status test test-unit chaos demo bench lint clean

help:
	@echo "make demo    run the whole pipeline on local Kafka + DuckDB and reconcile"
	@echo "make test    install everything, start Kafka + BigQuery emulator, run all tests, stop them"
	@echo "make bench   throughput / latency / memory benchmark (prints a table, writes bench-results.json)"
	@echo "make up | down | status   the local stack"

# Any change to payflow/stages/*.py reinstalls, which compiles the per-event stages again (setup.py:
# mypyc); a compiled module older than its source would run the old code, and the package
# refuses to import one (payflow/runtime/process.py). PAYFLOW_PURE_PYTHON=1 installs uncompiled.
$(VENV)/.installed: setup.cfg pyproject.toml setup.py $(wildcard payflow/stages/*.py)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --upgrade pip==26.3
	$(PIP) install -q --disable-pip-version-check -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
	scripts/kafka.sh fetch
	scripts/bqemulator.sh install
	scripts/helm.sh >/dev/null

up: install
	$(STACK) up

down:
	$(STACK) down

status:
	@$(STACK) status

# Unit, integration, end-to-end and fault tests against the real broker and emulator.
test: install
	$(STACK) run -- $(PY) -m pytest -ra -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

chaos: install
	$(STACK) run -- $(PY) -m pytest -ra -m fault $(PYTEST_ARGS)

demo: install
	$(STACK) run --no-bq -- $(PY) -m payflow.demo

bench: install
	$(STACK) run --no-bq -- $(PY) -m payflow.bench

lint: install
	$(VENV)/bin/hadolint Dockerfile
	$$(scripts/helm.sh) lint --strict --kube-version 1.31.0 helm/payflow --set secrets.create.hmacKeys=lint-1:$$(printf '0%.0s' {1..64})

clean: down
	rm -rf var $(VENV)
