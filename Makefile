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
	@echo "setup: installing Checkov into $(VENV)/checkov (its own virtualenv: it pins boto3 older than the workloads need; tests/policies/test_checkov_oracle.py runs it)"
	$(PY) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --upgrade pip
	$(VENV)/checkov/bin/pip install --progress-bar on checkov==3.3.30
	touch $(STAMP)
	@echo "setup: done ($(VENV))"

setup: $(STAMP)

# The training part removes its own out/demo-* first, so every `make demo` prepares, trains its
# 60 steps and exports again (with the directory kept, a rerun would resume at step 60 and stop
# at once). Resuming is shown by the tests and docs/workloads.md, not here. Data: the stdlib
# corpus with a 512-token byte-level BPE trained on it (~10 s); the export is a Hugging Face
# Llama checkpoint (the README shows loading it with transformers).
DEMO_DATA := out/demo-data
DEMO_CKPT := out/demo-ckpt
DEMO_METRICS := out/demo-metrics.jsonl
DEMO_EXPORT := out/demo-export
demo: $(STAMP)
	$(BIN)/trainyard plan --stack $(STACK)
	$(BIN)/trainyard check --stack $(STACK)
	$(BIN)/trainyard cost --stack $(STACK)
	rm -rf $(DEMO_DATA) $(DEMO_CKPT) $(DEMO_METRICS) $(DEMO_EXPORT)
	$(BIN)/python -m workloads.llm.prepare --out $(DEMO_DATA) --tokenizer bpe --vocab-size 512 --val-fraction 0.01 --max-tokens 1000000
	$(BIN)/python -m workloads.llm.train --preset tiny --max-steps 60 --data $(DEMO_DATA) --checkpoint-dir $(DEMO_CKPT) --checkpoint-every 20 --eval-every 20 --eval-batches 10 --metrics-file $(DEMO_METRICS)
	$(BIN)/python -m workloads.llm.export --checkpoint $(DEMO_CKPT) --out $(DEMO_EXPORT)
	$(BIN)/python -m workloads.llm.generate --checkpoint $(DEMO_CKPT) --prompt "def " --max-new-tokens 32 --greedy

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
