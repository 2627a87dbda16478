# The README's two commands:  `make demo` (offline plan + policy check + cost of the dev stack,
# then a short local CPU training run) and `make test` (the whole suite). Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK ?= dev
# An extra package index for torch, e.g. the PyTorch CPU wheels on a machine without a GPU:
#   make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (on a fresh .venv: `make clean` first). Empty: pip's own configuration decides; from stock
# PyPI on Linux torch==2.13.0 is the default wheel, built for CUDA, with GBs of nvidia-* wheels.
TORCH_INDEX_URL ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))

.PHONY: setup demo test lint bench review clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "setup: installing torch 2.13.0, the Pulumi SDK and providers, boto3 and the test tools into $(VENV) ($(if $(TORCH_INDEX_URL),torch from $(TORCH_INDEX_URL),torch from pip's configured indexes))"
	@echo "setup: the first time takes about 6 minutes on 2 cores: several hundred MB of wheels (GBs if torch resolves to the CUDA build)"
	$(BIN)/pip install --progress-bar on $(PIP_INDEX_ARGS) -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)
	@echo "setup: done ($(VENV))"

setup: $(STAMP)

# The training part removes its own out/demo-ckpt and out/demo-metrics.jsonl first, so every
# `make demo` trains its 60 steps again (with the directory kept, a rerun would resume at step 60
# and stop at once). Resuming is shown by the tests and docs/workloads.md, not here.
DEMO_CKPT := out/demo-ckpt
DEMO_METRICS := out/demo-metrics.jsonl
demo: $(STAMP)
	$(BIN)/trainyard plan --stack $(STACK)
	$(BIN)/trainyard check --stack $(STACK)
	$(BIN)/trainyard cost --stack $(STACK)
	rm -rf $(DEMO_CKPT) $(DEMO_METRICS)
	$(BIN)/python -m workloads.llm.train --preset tiny --max-steps 60 --checkpoint-dir $(DEMO_CKPT) --checkpoint-every 20 --metrics-file $(DEMO_METRICS)

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
