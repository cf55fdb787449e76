# secure-ai-pipelines — every set-up step lives here. `make demo` and `make test` are all a user needs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
# Users on other platforms may point this at another torch build, e.g. TORCH_SPEC='torch==2.13.0+cpu'.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
RUN_DIR ?= .run
SERVICES_FILE := $(RUN_DIR)/services/services.json
# The venv is rebuilt whenever the dependency declarations change.
DEPS_HASH := $(shell cat pyproject.toml package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.saip-deps-$(DEPS_HASH)
NODE_STAMP := node_modules/.saip-deps-$(DEPS_HASH)

.PHONY: help venv demo test test-only lint fmt services-up services-down clean bench

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) (dependencies changed or venv missing)"
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo "==> installing Azurite (npm ci)"
	npm ci --no-audit --no-fund --silent
	touch $@

venv: $(STAMP) $(NODE_STAMP) ## create/refresh .venv and node_modules when pyproject/package-lock change

demo: $(STAMP) ## run the whole pipeline on the embedded local default
	$(BIN)/saip demo

services-up: venv ## start moto (x2), the Pub/Sub emulator and Azurite on 127.0.0.1
	$(BIN)/python -m saip.devservices up --run-dir $(RUN_DIR)/services

services-down: ## stop every service started by services-up, by PID
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m saip.devservices down --run-dir $(RUN_DIR)/services; fi

test: venv ## start the stand-ins, run the whole test suite, stop the stand-ins (even on failure)
	@$(MAKE) --no-print-directory services-up
	@rc=0; SAIP_SERVICES_FILE=$(CURDIR)/$(SERVICES_FILE) $(MAKE) --no-print-directory test-only || rc=$$?; \
	  $(MAKE) --no-print-directory services-down; \
	  if [ $$rc -eq 0 ]; then echo "==> make test: all checks passed"; fi; \
	  exit $$rc

test-only: ## run pytest and the Terraform checks against already-running stand-ins
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv ## ruff + mypy (strict) on every src/ package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ingestion/src encryption/src federated-learning/src poisoning-detection/src pipeline/src

fmt: venv ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## run every benchmark side by side with its anchors -> benchmarks/results/*.json (~15 min)
	$(BIN)/python benchmarks/encryption.py
	$(BIN)/python benchmarks/ingestion.py --out benchmarks/results/ingestion.json
	$(BIN)/python benchmarks/poisoning.py
	$(BIN)/python benchmarks/fl.py

clean: services-down ## remove run state (keeps .venv)
	rm -rf $(RUN_DIR) .saip .pytest_cache .mypy_cache .ruff_cache

# Capability-specific targets (Terraform checks, Flower deployment, benchmarks) live in make/*.mk.
include $(sort $(wildcard make/*.mk))
