# mlflow-gitops: thin targets; the logic lives in scripts/ (Python).
include tools/versions.env

ENV ?= homelab
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools deps lock schemas render test lint
.DEFAULT_GOAL := help

help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

.venv-scan/.installed: requirements-scan.txt
	$(PYTHON) -m venv .venv-scan
	.venv-scan/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	touch $@

tools: $(VENV)/.installed .venv-scan/.installed ## Install the pinned tools into ./bin, .venv and .venv-scan.
	$(PY) scripts/tools.py

deps: tools ## Put the upstream mlflow chart in place (offline: MLFLOW_CHART=<dir or .tgz>).
	$(PY) scripts/deps.py

lock: tools ## Rewrite Chart.lock from the pins in Chart.yaml.
	$(PY) scripts/chart_lock.py charts/mlflow-stack

schemas: tools ## Regenerate schemas/ from kubernetes-validate and the CRDs in Go modules.
	$(PY) scripts/schemas.py

render: tools ## Render values/$(ENV).yaml into rendered/$(ENV).yaml (needs the upstream chart).
	$(PY) scripts/render.py $(ENV)

test: tools ## Run the test suite (the README's test command).
	$(PY) -m pytest
