# One entry point for developers and CI. `make run` = local stack + the main job; `make test` = the suite.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TASKS_VENV := .venv-tasks
CHECKOV_VENV := .venv-checkov
STATE := .local
# Every venv installs its lock (the whole closure, with hashes): what deploys is what was tested (scripts/locks.py).
PIP_LOCKED = pip install --quiet --require-hashes --no-deps

.DEFAULT_GOAL := all
.PHONY: all install up down run test test-unit lint format typecheck bench pr lock bundles deploy-check

all: pr

$(VENV)/.installed: requirements/dev.lock client/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m $(PIP_LOCKED) -r requirements/dev.lock 2>&1 | { grep -v "Location 'file:" >&2 || true; }
	@$(PY) -m pip install --quiet --no-deps -e . -e client >&2
	@touch $@

$(TASKS_VENV)/.installed: requirements/tasks-emulator.lock
	@test -x $(TASKS_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_VENV)
	@$(TASKS_VENV)/bin/python -m $(PIP_LOCKED) -r requirements/tasks-emulator.lock 2>&1 | { grep -v "Location 'file:" >&2 || true; }
	@touch $@

$(CHECKOV_VENV)/.installed: requirements/checkov.lock
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	@$(CHECKOV_VENV)/bin/python -m $(PIP_LOCKED) -r requirements/checkov.lock 2>&1 | { grep -v "Location 'file:" >&2 || true; }
	@touch $@

# Node tools, pinned by their lockfiles and installed into the repo like the venvs: the Firebase Authentication
# emulator of the local stack (firebase-tools) and the client-app example (the Firebase JS SDK).
FIREBASE_TOOLS := local/firebase/node_modules
WEB_LISTENER := examples/web-listener/node_modules

$(FIREBASE_TOOLS)/.installed: local/firebase/package.json local/firebase/package-lock.json
	@cd local/firebase && npm ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

$(WEB_LISTENER)/.installed: examples/web-listener/package.json examples/web-listener/package-lock.json
	@cd examples/web-listener && npm ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

install: $(VENV)/.installed $(TASKS_VENV)/.installed $(FIREBASE_TOOLS)/.installed $(WEB_LISTENER)/.installed

# Lint and types: the same commands CI runs.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy shared functions worker simulators local scripts bench client/src

# The suite: unit + integration against the real emulators and our simulators (+ worker on CPU, + e2e).
test: install
	$(PY) -m pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# The inner loop (under a minute, no emulator, no stack, no Node tools): the pure tests, the client's offline tests
# and the simulators' own tests (each serves its simulator in a thread). `make test` stays the whole suite.
test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit tests/client/test_offline.py tests/simulators $(PYTEST_ARGS)

# Regenerate every lock file from its inputs (requirements/*.txt, worker/requirements.txt), keeping current pins.
lock: $(VENV)/.installed
	$(PY) -m scripts.locks compile

# The function sources as Cloud Build stages them for Terraform: build/functions/<name>/ (main.py, shared/, the lock).
bundles: $(VENV)/.installed
	$(PY) -m local.gen_infra bundle --out build/functions

# Offline replay of a deploy (docs/deploy.md): bundles in fresh venvs, served under Terraform's environment, the
# Cloud Build and Terraform rules, the locks, terraform fmt, checkov and the worker image's file set.
deploy-check: install $(CHECKOV_VENV)/.installed bundles
	$(PY) -m scripts.deploy_check

bench: install
	$(PY) -m bench

pr: lint typecheck test deploy-check

# The local stack (local/stack.py; its command line is local/cli.py). `up` starts it in the background and prints
# KEY=VALUE lines on stdout (so the recipes are silent); `run` is up + `visgate e2e` of the demo model (local/cli.py
# run_main_job); `down` stops what `up` started, by process group.
up: install
	@$(PY) -m local up

down:
	@$(PY) -m local down

run: install
	@$(PY) -m local run
