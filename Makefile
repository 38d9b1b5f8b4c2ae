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
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Load tests: against a running server (`make serve` in another terminal).
HOST ?= http://127.0.0.1:8000
DURATION ?= 60s
USERS ?= 100
SPAWN_RATE ?= 20

.PHONY: help install system-deps apt demo serve test lint unit integration rules bench loadtest manifests kserve-sdk clean


help:
	@echo "make serve   - install, register the demo model if missing, serve it on :8000"
	@echo "make test    - everything CI checks: ruff, mypy --strict, the whole test suite"
	@echo "make bench   - our service against mlflow models serve, side by side (about 4 minutes)"
	@echo "make loadtest [HOST=... DURATION=60s USERS=100] - locust, headless, against a running server"

$(BIN)/.installed: pyproject.toml requirements-serve.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-serve.txt -e '.[dev]'
	@touch $@

$(KSERVE_VENV)/.installed: requirements-kserve.txt
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet -r requirements-kserve.txt
	@touch $@

install: $(BIN)/.installed

kserve-sdk: $(KSERVE_VENV)/.installed

system-deps:
	@$(MAKE) --no-print-directory apt PACKAGES="$(APT_PACKAGES)"

apt:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(BIN)/model-api demo --artifacts $(DATA)/artifacts

serve: demo
	$(BIN)/model-api serve

lint: install
	$(BIN)/ruff check src tests tools locustfile.py
	$(BIN)/ruff format --check src tests tools locustfile.py
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit tests/api

integration: install system-deps
	$(BIN)/pytest tests/integration

# deploy/: kustomize build, Kubernetes schemas (strict), KServe models (strict), probe/port drift.
manifests: install kserve-sdk
	$(BIN)/pytest tests/deploy/test_manifests.py

# Prometheus config, rule files and the unit tests of every alert (promtool, from Debian's prometheus).
rules: system-deps
	promtool check config prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.test.yml

test: install kserve-sdk system-deps lint rules
	$(BIN)/pytest

bench: demo
	@$(MAKE) --no-print-directory apt PACKAGES="wrk"
	$(BIN)/python -m tests.bench.bench

loadtest: install
	@curl -sf $(HOST)/ready >/dev/null || { echo "no ready server at $(HOST): start one with 'make serve'"; exit 1; }
	@mkdir -p loadtest-results
	$(BIN)/locust -f locustfile.py --headless --host $(HOST) --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	  --run-time $(DURATION) --stop-timeout 10 --csv loadtest-results/locust --html loadtest-results/report.html \
	  --exit-code-on-error 1

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache .mypy_cache .ruff_cache
