# Lingxi developer commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint bench-parse bench-encoders bench-kb-scale bench-suggest bench-finetune clean

install: $(STAMP)

# torch is installed first and pinned: 2.13.0 is a CPU wheel on these machines' disk, while an
# unpinned requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

serve: install
	$(BIN)/lingxi serve --train-if-missing

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -ra

lint: install
	$(BIN)/ruff check .

bench-parse: install
	$(BIN)/python -m lingxi.evals.bench_parse

bench-encoders: install
	$(BIN)/python -m lingxi.evals.bench_encoders

bench-kb-scale: install
	$(BIN)/python -m lingxi.evals.bench_scale

bench-suggest: install
	$(BIN)/python -m lingxi.evals.bench_suggest

bench-finetune: install
	$(BIN)/python -m lingxi.evals.bench_finetune

clean:
	rm -rf $(VENV) .lingxi .pytest_cache .ruff_cache *.egg-info
