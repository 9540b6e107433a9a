# The two set-up commands of the README: `make demo` and `make test`. Both start from a fresh
# clone: they create .venv, install the project and its tools; the demo uses the shipped model in
# models/default. `make base`, `make camembert` and `make default-model` reproduce the shipped
# model and the comparison in its report (README: "The default model"): about an hour and a
# quarter on a 2-core machine, with ../shared/data beside the clone.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MODEL := models/default
BASE := models/base
SHARED ?= ../shared/data

.PHONY: install demo test lint format base camembert default-model clean system-deps bench

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The French base model: tokenizer + small CamemBERT pretrained on ../shared/data and the text of
# the training split.
base: install
	$(BIN)/triage pretrain --shared $(SHARED) --data data/train --out $(BASE)

# The CamemBERT classifier fine-tuned from that base, and the same from random initialisation.
camembert: install
	$(BIN)/triage train --base $(BASE) --data data/train --validation data/validation \
		--out models/camembert
	$(BIN)/triage train --base $(BASE) --data data/train --validation data/validation \
		--out models/camembert-random --set random_init=true

# The shipped default: the best model on validation data (today the TF-IDF baseline), and its
# report on the test split beside the two CamemBERT runs.
default-model: install
	$(BIN)/triage train --data data/train --validation data/validation --out $(MODEL)
	$(BIN)/triage evaluate --model $(MODEL) data/test --report $(MODEL)/report \
		$(foreach dir,$(wildcard models/camembert models/camembert-random),--compare $(dir))

demo: install
	$(BIN)/triage demo

lint: install
	$(BIN)/ruff check worker classifiers tests data/tools bench
	$(BIN)/ruff format --check worker classifiers tests data/tools bench
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

# The performance benchmarks (not part of `make test`): about 15 minutes on 2 cores; results in
# bench/results/latest.md and .json.
bench: install system-deps
	$(BIN)/python -m bench.run

format: install
	$(BIN)/ruff format worker classifiers tests bench
	$(BIN)/ruff check --fix worker classifiers tests bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
