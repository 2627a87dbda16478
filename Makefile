# The README's two commands:  `make demo` (offline plan + policy check + cost of the dev stack,
# then a short local CPU training run) and `make test` (the whole suite). Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK ?= dev

.PHONY: setup demo test lint bench review clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/trainyard plan --stack $(STACK)
	$(BIN)/trainyard check --stack $(STACK)
	$(BIN)/trainyard cost --stack $(STACK)
	$(BIN)/python -m workloads.llm.train --preset tiny --max-steps 60 --checkpoint-dir out/demo-ckpt --checkpoint-every 20 --metrics-file out/demo-metrics.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python scripts/bench_plan.py

BASE ?= origin/main
review: $(STAMP)
	$(BIN)/trainyard review --base $(BASE)

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
