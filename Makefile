# Signet developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: all venv tools lint test test-unit test-cluster test-under-load demo bench crds clean \
	lock sbom audit supply-tools

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## tools: build kube-apiserver, etcd, kube-controller-manager, kubectl, kubelet, helm, the
## node's workload binary (tools/workload) and cert-manager's controller into .tools/bin
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
	$(BIN)/python -m bench $(if $(QUICK),--quick,) $(if $(SCALE),--scale,)

## Supply chain: the runtime dependencies are locked with hashes in $(LOCK) (what the
## Dockerfile installs with --require-hashes). The tools run from a throwaway virtualenv of
## their own (pinned here), never from the dev venv or the image.
LOCK := requirements.lock
SUPPLY := .tools/supply-venv
SUPPLY_TOOLS := uv==0.13.8 pip-audit==2.10.1 cyclonedx-bom==7.5.0
SUPPLY_STAMP := $(SUPPLY)/.installed-$(shell echo '$(SUPPLY_TOOLS)' | sha256sum | cut -c1-12)
SBOM := dist/sbom.cdx.json
# AUDIT_SERVICE: pypi (PyPI's JSON API, pip-audit's default) or osv. AUDIT_DB=FILE audits
# offline against an OSV database (a .zip or folder of OSV JSON records: OSV's PyPI all.zip)
AUDIT_SERVICE ?= pypi
AUDIT_DB ?=
AUDIT_ARGS ?=
# AUDIT_UNAUDITED_OK=1: a service that cannot be asked warns instead of failing (exit 3)
AUDIT_UNAUDITED_OK ?=

$(SUPPLY_STAMP):
	@rm -rf $(SUPPLY)
	$(PYTHON) -m venv $(SUPPLY)
	$(SUPPLY)/bin/pip install --quiet --disable-pip-version-check $(SUPPLY_TOOLS)
	@touch $@

supply-tools: $(SUPPLY_STAMP)

## lock: re-resolve pyproject.toml's [project.dependencies] into $(LOCK): pinned, sha256
## hashes of every wheel and sdist, one universal resolution (any OS and CPU, Python >= 3.11,
## environment markers where it differs). Keeps existing pins; UPGRADE=1 takes the newest.
lock: $(SUPPLY_STAMP)
	$(SUPPLY)/bin/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	  --python-version 3.11 --custom-compile-command 'make lock' \
	  $(if $(UPGRADE),--upgrade,) -o $(LOCK)

## sbom: a CycloneDX (JSON) SBOM of the locked runtime set in $(SBOM)
sbom: $(SUPPLY_STAMP)
	@mkdir -p $(dir $(SBOM))
	$(SUPPLY)/bin/cyclonedx-py requirements $(LOCK) --pyproject pyproject.toml \
	  --output-reproducible --of JSON -o $(SBOM)
	@echo "wrote $(SBOM)"

## audit: pip-audit on the locked set (hack/audit_lock.py says how it ended: a known
## vulnerability fails; so does a vulnerability service that could not be asked, unless
## AUDIT_UNAUDITED_OK=1, which only warns)
audit: $(SUPPLY_STAMP)
	$(SUPPLY)/bin/python hack/audit_lock.py --pip-audit $(SUPPLY)/bin/pip-audit \
	  --service $(AUDIT_SERVICE) $(if $(AUDIT_DB),--db $(AUDIT_DB),) \
	  $(if $(AUDIT_UNAUDITED_OK),--allow-unaudited,) $(AUDIT_ARGS) $(LOCK)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
