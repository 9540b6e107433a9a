# The two set-up commands of the README: `make demo` and `make test`. Both start from a fresh
# clone: they create .venv, install the project and its tools, and (demo) train the default model
# when models/default holds none.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MODEL := models/default

.PHONY: install demo test lint format model clean system-deps

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(MODEL)/metadata.json: | $(STAMP)
	$(BIN)/triage train --data data/train --validation data/validation --out $(MODEL)

model: $(MODEL)/metadata.json

demo: install model
	$(BIN)/triage demo

lint: install
	$(BIN)/ruff check worker classifiers tests
	$(BIN)/ruff format --check worker classifiers tests
	$(BIN)/mypy

# Debian packages the integration tests run for real (installed only when missing; needs root).
system-deps:
	@missing=""; \
	command -v rabbitmq-server >/dev/null 2>&1 || missing="$$missing rabbitmq-server"; \
	command -v dovecot >/dev/null 2>&1 || missing="$$missing dovecot-imapd"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: install lint system-deps
	$(BIN)/pytest

format: install
	$(BIN)/ruff format worker classifiers tests
	$(BIN)/ruff check --fix worker classifiers tests

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
