# Signet developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: all venv tools lint test test-unit test-cluster test-under-load demo bench crds clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## tools: build kube-apiserver, etcd, kube-controller-manager, kubectl, kubelet, helm and the
## node's workload binary (tools/workload) into .tools/bin
tools:
	@tools/build-tools.sh

## lint: ruff, mypy (strict) and the import-layering contracts
lint: venv tools
	$(BIN)/ruff check operator tests hack bench examples
	$(BIN)/ruff format --check operator tests hack bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports
	@test ! -x .tools/bin/helm || .tools/bin/helm lint --strict --quiet charts/signet

## test: everything CI runs: lint, unit tests, cluster tests on a real control plane
test: venv tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m "not cluster" $(PYTEST_ARGS)

test-cluster: venv tools
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

## test-under-load: the reliability suite while stress-ng keeps every core busy (CI machines
## are noisy; a test that only passes on an idle machine is broken)
test-under-load: venv tools
	@command -v stress-ng >/dev/null || { echo "stress-ng is missing: apt-get install stress-ng" >&2; exit 1; }
	@stress-ng --cpu "$$(nproc)" --cpu-load 100 --timeout 2h --quiet & hog=$$!; \
	trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT; \
	$(BIN)/pytest -m cluster tests/reliability $(PYTEST_ARGS)

## crds: regenerate the issuer CRDs and copy all CRDs into the Helm chart
crds: venv
	$(BIN)/python hack/gen_issuer_crds.py
	cp crds/*.yaml charts/signet/files/crds/

demo: venv tools
	$(BIN)/python -m signet_dev.demo $(if $(ONCE),--once,)

bench: venv tools
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
