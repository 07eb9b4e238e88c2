# Lingxi developer commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEB    := serving/web
WEB_STAMP := $(WEB)/dist/.built
WEB_SRC := $(shell find $(WEB)/src -type f 2>/dev/null) $(WEB)/vite.config.js $(WEB)/vite.widget.config.js
export NODE_CHECK := const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)

.PHONY: install serve test lint bench-parse bench-encoders bench-kb-scale bench-suggest bench-finetune bench-replay bench-load fuzz clean

install: $(STAMP) $(WEB_STAMP)

# torch is installed first and pinned: 2.13.0 is a CPU wheel on these machines' disk, while an
# unpinned requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The chat widget, demo shop page and operator console (serving/web, Vite): rebuilt only when their
# sources change; skipped with a message when Node.js >= 20.19 is missing (the API works without them).
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json $(WEB_SRC)
	@if ! command -v npm > /dev/null 2>&1 || ! node -e "$$NODE_CHECK" 2> /dev/null; then \
		echo "make install: Node.js >= 20.19 with npm not found; skipping the web widget, demo page and console" \
			"(the API works without them; install Node.js and run make install again)"; \
	else \
		cd $(WEB) && { [ node_modules/.package-lock.json -nt package-lock.json ] \
			|| npm ci --no-audit --no-fund --loglevel=error; } && npm run build --silent > /dev/null && touch dist/.built; \
	fi

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

# simulated customers feed the feedback loop (StackFAQ + BQ view); held-out MRR@10 / Recall@1 curve
bench-replay: install
	LINGXI_HOME=$(CURDIR)/.lingxi $(BIN)/python -m lingxi.evals.replay --out eval-out/replay

# wrk (Debian package) against a real `lingxi serve`: req/s, p50/p99, errors at 1/8/16 clients vs offline encoding
bench-load: install
	@command -v wrk > /dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk > /dev/null; }
	LINGXI_HOME=$(CURDIR)/.lingxi $(BIN)/python -m lingxi.evals.bench_load --out eval-out/bench-load.json

# schemathesis against a real `lingxi serve`, every route, >= 1,000 generated requests
fuzz: install
	LINGXI_HOME=$(CURDIR)/.lingxi $(BIN)/python -m lingxi.evals.fuzz --out eval-out/fuzz

clean:
	rm -rf $(VENV) .lingxi .pytest_cache .ruff_cache *.egg-info
