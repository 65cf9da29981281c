# taxifare: one verb per workflow. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

help:  ## list the workflows
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv (when missing) and install the project with the locked versions

run: $(STAMP)  ## the main job: the whole pipeline on this machine (generated data -> deployed model)
	$(BIN)/taxifare run

compile: $(STAMP)  ## regenerate compiled/*.yaml (commit the result)
	$(BIN)/taxifare compile

test: $(STAMP) lint  ## lint, type-check and run the whole test suite
	$(BIN)/pytest

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)  ## run the benchmarks (minutes; figures go to docs/benchmarks.md)
	$(BIN)/python bench/bench_trainer.py

lock: $(STAMP)  ## re-pin requirements.lock from the current environment
	{ sed -n '1,2p' requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -v '^taxifare'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:  ## remove runs/ and caches (keeps .venv)
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache

.PHONY: help install run compile test lint format bench lock clean
