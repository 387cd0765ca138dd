# One entry point for developers and CI. `make run` = local stack + the main job; `make test` = the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TASKS_VENV := .venv-tasks
STATE := .local

.DEFAULT_GOAL := all
.PHONY: all install up down run test test-fast lint format typecheck bench pr models

all: pr

$(VENV)/.installed: requirements/*.txt worker/requirements*.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(TASKS_VENV)/.installed: requirements/tasks-emulator.txt
	test -x $(TASKS_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_VENV)
	$(TASKS_VENV)/bin/pip install --quiet -r requirements/tasks-emulator.txt
	touch $@

install: $(VENV)/.installed $(TASKS_VENV)/.installed
