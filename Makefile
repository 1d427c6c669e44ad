# mlflow-gitops: thin targets; the logic lives in mlflow_gitops/ (a Python package, installed into
# .venv in editable mode, so `$(PY) -m mlflow_gitops.<module>` runs the checkout's code).
include tools/versions.env

ENV ?= homelab
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools deps lock schemas render chart-readme test lint
.DEFAULT_GOAL := help

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

.venv-scan/.installed: requirements-scan.txt
	$(PYTHON) -m venv .venv-scan
	.venv-scan/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	touch $@

tools: $(VENV)/.installed .venv-scan/.installed ## Install the pinned tools into ./bin, .venv and .venv-scan.
	$(PY) -m mlflow_gitops.tools

deps: tools ## Put the upstream mlflow chart in place (offline: MLFLOW_CHART=<dir or .tgz>).
	$(PY) -m mlflow_gitops.deps

lock: tools ## Rewrite Chart.lock from the pins in Chart.yaml.
	$(PY) -m mlflow_gitops.chart_lock charts/mlflow-stack

schemas: tools ## Regenerate schemas/ from kubernetes-validate and the CRDs in Go modules.
	$(PY) -m mlflow_gitops.schemas

render: tools ## Render values/$(ENV).yaml into rendered/$(ENV).yaml (needs the upstream chart).
	$(PY) -m mlflow_gitops.render $(ENV)

# Every environment at once, and the check CI and the pre-commit hook run: a fresh render of each
# values/<env>.yaml (into a temp dir, mlflow_gitops/render_check.py) must equal rendered/<env>.yaml.
ENVS = $(sort $(basename $(notdir $(wildcard values/*.yaml))))
.PHONY: render-all render-check
render-all: tools ## Render every values/*.yaml into rendered/ (needs the upstream chart).
	$(PY) -m mlflow_gitops.render $(ENVS)

render-check: tools ## Fail, showing the diff, when a fresh render differs from rendered/.
	$(PY) -m mlflow_gitops.render_check

chart-readme: tools ## Write charts/mlflow-stack/README.md (helm-docs: README.md.gotmpl, values.yaml).
	$(PY) -m mlflow_gitops.chart_readme

test: tools apiserver e2e-deps node-build ## Run the whole test suite (the README's test command), lint included.
	$(PY) -m pytest

# CI's fast job (.github/workflows/ci.yml) and a quick local run: no root, PostgreSQL or API server.
.PHONY: test-offline
test-offline: tools ## The suite without tests/e2e, tests/api, tests/node (REQUIRE_UPSTREAM=1: no upstream skips).
	$(PY) -m pytest --ignore=tests/e2e --ignore=tests/api --ignore=tests/node

# The CI workflows (.github/workflows/, docs/ci.md): actionlint and zizmor, both pinned, both silent.
.PHONY: workflow-check
workflow-check: tools ## actionlint and zizmor over .github/workflows/ (tests/test_workflows.py too).
	$(PY) -m mlflow_gitops.workflows

# tests/test_lint.py runs the same checks (mlflow_gitops/lint.py), so `make test` lints too.
lint: tools ## ruff (format, lint), yamllint, helm lint of the chart with each values/<env>.yaml.
	$(PY) -m mlflow_gitops.lint

# GitOps delivery (deploy/, kustomization.yaml): every Flux and Argo CD entry point, built with
# kustomize and validated offline. `make test` covers the same (tests/test_gitops.py).
.PHONY: gitops
gitops: tools ## Build every Flux/Argo CD entry point with kustomize and validate it.
	$(PY) -m mlflow_gitops.gitops

# The rendered pod on this machine (mlflow_gitops.podrunner): PostgreSQL, busybox and Chromium from
# Debian, the image's MLflow server from requirements-e2e.txt and Playwright from
# requirements-browser.txt, in .venv next to the tools.
# `make up` prints http://localhost:$(UP_PORT); the homelab allows port 5000 only, so another
# UP_PORT gets preview-only allowed hosts, said when it starts (mlflow_gitops/podrunner/preview.py).
UP_PORT ?= 5000

$(VENV)/.e2e-installed: $(VENV)/.installed requirements.txt requirements-e2e.txt requirements-browser.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-e2e.txt \
		-r requirements-browser.txt
	touch $@

.PHONY: e2e-deps e2e up screenshot
e2e-deps: $(VENV)/.e2e-installed ## Install PostgreSQL, Chromium (apt), MLflow, Playwright (pip) when missing.
	$(PY) -m mlflow_gitops.install_postgres

e2e: tools e2e-deps ## Run rendered/$(ENV).yaml's pod against PostgreSQL and test it.
	E2E_RENDER=rendered/$(ENV).yaml $(PY) -m pytest tests/e2e

up: e2e-deps ## Serve rendered/$(ENV).yaml's MLflow at http://localhost:$(UP_PORT) (Ctrl-C stops it).
	$(PY) -m mlflow_gitops.podrunner up --render rendered/$(ENV).yaml --port $(UP_PORT)

screenshot: e2e-deps ## Write docs/ui.png: the UI of rendered/$(ENV).yaml's pod, in Chromium.
	$(PY) -m mlflow_gitops.ui --render rendered/$(ENV).yaml

# The upgrade rehearsal (tests/e2e/test_upgrade.py) populates a database with the previous MLflow
# minor's server: requirements-previous.txt, in a venv of its own (the image before the bump).
PREVIOUS_VENV := .venv-previous

$(PREVIOUS_VENV)/.installed: requirements-previous.txt
	$(PYTHON) -m venv $(PREVIOUS_VENV)
	$(PREVIOUS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-previous.txt
	touch $@

e2e-deps: $(PREVIOUS_VENV)/.installed

# A real kube-apiserver and etcd for tests/api (mlflow_gitops.apiserver_build): built from the Go
# module proxy at KUBE_APISERVER_VERSION / ETCD_VERSION into ./bin. Cold: about 4-6 min on 2 cores,
# 1.8 GiB. Without them tests/api skips, or fails under CI=true.
.PHONY: apiserver
apiserver: ## Build the pinned kube-apiserver and etcd into ./bin (for tests/api).
	$(PYTHON) -m mlflow_gitops.apiserver_build

# Capacity (mlflow_gitops.bench): the rendered server pinned to one CPU, its variants and MLflow's own
# defaults, then the shipped settings under overload with the kubelet's probes, against PostgreSQL
# through mlflow_gitops.podrunner; about 20 min, not part of `make test`. Writes bench/results.json,
# bench/overload/, their charts and the tables of bench/README.md.
# BENCH_ARGS=--quick: short phases into a temp dir; BENCH_ARGS="--only shipped,defaults": a subset;
# BENCH_ARGS="--only overload": the overload phase alone.
BENCH_ARGS ?=

$(VENV)/.bench-installed: $(VENV)/.e2e-installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

.PHONY: bench
bench: e2e-deps $(VENV)/.bench-installed ## Measure capacity on one CPU (bench/README.md).
	$(PY) -m mlflow_gitops.bench $(BENCH_ARGS)

# A one-node cluster from Kubernetes' own components (mlflow_gitops/node, docs/node.md): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy and CoreDNS
# in a network namespace of its own, nothing pulled. Root only. `make test` runs its tests (tests/node)
# with the rest. The render's own images (MLflow from Debian's python3 and requirements-e2e.txt,
# busybox) are built on the first start (about 4-5 min) and cached in ~/.cache/mlflow-gitops/node-images
# (mlflow_gitops/node/render_images.py), as are the CloudNativePG operator's image (bin/cnpg/manager,
# built from its Go module at CNPG_VERSION) and its PostgreSQL 15 operand image from Debian's
# packages (mlflow_gitops/node/cnpg_images.py). Flux's controllers (`make node-flux`) and External
# Secrets' (`make node-external-secrets`) are built apart: each serves one test that needs the
# upstream chart, and cold each takes about as long as the rest of the node.
.PHONY: node-build node-flux node-external-secrets node node-test
node-build: apiserver ## Build the node's binaries into ./bin (pins in tools/versions.env); Debian packages.
	$(PYTHON) -m mlflow_gitops.node.build

node-flux: ## Build Flux's source-, kustomize- and helm-controller into ./bin (tests/node/test_flux.py).
	$(PYTHON) -m mlflow_gitops.node.build --flux

node-external-secrets: ## Build External Secrets' controller into ./bin (tests/node/test_external_secrets.py).
	$(PYTHON) -m mlflow_gitops.node.build --external-secrets

node: tools node-build ## Start the one-node cluster in the foreground (Ctrl-C stops it cleanly).
	$(PY) -m mlflow_gitops.node

node-test: tools node-build node-flux node-external-secrets ## The node's tests alone (tests/node): the chart on a real kubelet.
	$(PY) -m pytest -m node tests/node
