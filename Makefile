# Two commands do everything: `make serve` and `make test`. Both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The kserve SDK for the KServe manifest check, in its own venv (it pins pandas<3).
KSERVE_VENV ?= .venv-kserve
DATA := $(CURDIR)/data
export MLFLOW_TRACKING_URI ?= sqlite:///$(DATA)/mlflow.db
# Debian packages the test suite drives for real.
APT_PACKAGES := chromium prometheus
# The image test builds and runs Dockerfile.api: a container engine and a base image made here.
APT_PACKAGES += podman runc debootstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Load tests: against a running server (`make serve` in another terminal).
HOST ?= http://127.0.0.1:8000
DURATION ?= 60s
USERS ?= 100
SPAWN_RATE ?= 20

.PHONY: help install system-deps apt demo serve test lint unit integration conformance rules image-test bench overload loadtest manifests kserve-sdk soak clean

help:
	@echo "make serve   - install, register the demo model if missing, serve it on :8000"
	@echo "make test    - everything CI checks: ruff, mypy --strict, the whole test suite"
	@echo "make unit | integration | conformance | manifests | rules | image-test - one part of make test"
	@echo "make bench   - our service against mlflow models serve, side by side, taking turns (about 9 minutes)"
	@echo "make overload [SPIKE=30 TAIL=10 ARGS='--front 64'] - one worker under an open-loop spike of 3x its capacity (about 1.5 minutes)"
	@echo "make loadtest [HOST=... DURATION=60s USERS=100] - locust, headless, against a running server"
	@echo "make soak [DURATION=60s USERS=100 WORKERS=1] - its own server under locust: no failures, flat memory"

$(BIN)/.installed: pyproject.toml requirements-serve.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-serve.txt -e '.[dev]'
	@touch $@

$(KSERVE_VENV)/.installed: tests/deploy/requirements-kserve.txt
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r tests/deploy/requirements-kserve.txt
	@touch $@

install: $(BIN)/.installed

kserve-sdk: $(KSERVE_VENV)/.installed

system-deps:
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_PACKAGES)"

# A package removed but not purged still answers `dpkg -s`: only "ok installed" counts.
apt:
	@missing=""; for p in $(PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(BIN)/model-api demo --artifacts $(DATA)/artifacts

serve: demo
	$(BIN)/model-api serve

lint: install
	$(BIN)/ruff check src tests locustfile.py
	$(BIN)/ruff format --check src tests locustfile.py
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold warning Dockerfile.api

unit: install
	$(BIN)/pytest tests/unit tests/api tests/middleware

integration: install system-deps
	$(BIN)/pytest tests/integration

# The conformance suite: 31 small models of every kind, every route against MLflow's own pyfunc
# model, and a real `mlflow models serve` side by side (about 5 minutes).
conformance: install
	$(BIN)/pytest tests/conformance

# deploy/: kustomize build, Kubernetes schemas (strict), KServe models (strict), probe/port drift.
manifests: install kserve-sdk
	$(BIN)/pytest tests/deploy/test_manifests.py

# Prometheus config, rule files and the unit tests of every alert (promtool, from Debian's prometheus).
rules: system-deps
	promtool check config prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.test.yml

test: install kserve-sdk system-deps lint rules
	$(BIN)/pytest -m 'not container'
	$(MAKE) --no-print-directory image-test

# Builds Dockerfile.api with no network (a local python:3.11-slim stand-in, the host's wheels) and
# runs it; the tests remove every container they start, pass or fail. Caches: ~/.cache/model-api.
image-test: install system-deps
	$(BIN)/pytest -m container tests/container

bench: demo
	@$(MAKE) --no-print-directory apt PACKAGES="wrk"
	$(BIN)/python -m tests.bench.bench

# One worker pinned to core 0, an open-loop generator on core 1: capacity (wrk), then 3x it for
# SPIKE seconds and half of it for TAIL seconds; targets PASS/FAIL, results in bench-results/.
# ARGS go to tests/bench/overload.py as they are (--set MODEL_API_X=V, --front 64, --help).
SPIKE ?= 30
TAIL ?= 10
ARGS ?=
overload: demo
	@$(MAKE) --no-print-directory apt PACKAGES="wrk"
	$(BIN)/python -m tests.bench.overload --spike $(SPIKE) --tail $(TAIL) $(ARGS)

loadtest: install
	@curl -sf $(HOST)/ready >/dev/null || { echo "no ready server at $(HOST): start one with 'make serve'"; exit 1; }
	@mkdir -p loadtest-results
	$(BIN)/locust -f locustfile.py --headless --host $(HOST) --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	  --run-time $(DURATION) --stop-timeout 10 --csv loadtest-results/locust --html loadtest-results/report.html \
	  --exit-code-on-error 1

# Soak: starts its own server (demo model, temporary registry), samples its memory during the run.
WORKERS ?= 1
soak: install
	$(BIN)/python -m tests.soak --duration $(DURATION) --users $(USERS) --spawn-rate $(SPAWN_RATE) --workers $(WORKERS)

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache .mypy_cache .ruff_cache
