# lmlab — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=
# pytest-xdist workers (one per core); each test file runs whole on one worker, in order
WORKERS ?= auto
XDIST  := -n $(WORKERS) --dist loadfile --no-loadscope-reorder
UI_PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help install lock train test test-all services slurm tracking-server lint typecheck format ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install lmlab with the locked dependencies (CPU torch unless a GPU is present)

# torch first (the build that fits the machine), then every other dependency at the version in the lock (uv installs
# them, in parallel), then lmlab itself without resolving anything again.
$(STAMP): pyproject.toml requirements/lock.txt requirements/torch.txt scripts/install_torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	scripts/install_torch.sh $(BIN)/python
	$(BIN)/python -m pip install --quiet "$$(grep '^uv==' requirements/lock.txt)"
	$(BIN)/uv pip install --python $(BIN)/python -r requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

lock: $(STAMP) ## recompile requirements/lock.txt after changing pyproject.toml's dependencies (then commit it)
	UV=$(BIN)/uv scripts/lock.sh

train: $(STAMP) ## run the default pretraining (tiny model, MLM, synthetic world); ARGS="..." adds overrides
	$(BIN)/python train.py $(ARGS)

test: $(STAMP) ## the everyday loop: every test not marked slow (about 6 min on 2 cores)
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

test-all: $(STAMP) services ## every test: the slow end-to-end ones and (as root) the Slurm and PostgreSQL ones too; CI runs this
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

services: ## as root: start the local services the integration tests use (else their tests are skipped)
	@if [ "$$(id -u)" -eq 0 ]; then scripts/slurm_cluster.sh start && scripts/tracking_server.sh install; \
	else echo "Not root: Slurm/PostgreSQL tests are skipped unless both are installed (sudo make services)"; fi

tracking-server: $(STAMP) ## start an MLflow server backed by PostgreSQL on 127.0.0.1:5001 (runs use logger=server)
	scripts/tracking_server.sh start

slurm: ## start a single-node Slurm cluster on this machine (root; scripts/slurm_cluster.sh stop ends it)
	scripts/slurm_cluster.sh start

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy on src/ (settings in pyproject.toml)
	$(BIN)/mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: $(STAMP) ## serve the MLflow UI for this project's runs on 127.0.0.1:$(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" \
		--default-artifact-root "$(CURDIR)/mlartifacts" --host 127.0.0.1 --port $(UI_PORT)

clean: ## remove outputs, caches and the local MLflow store (keeps .venv)
	rm -rf outputs .cache mlflow.db mlartifacts .pytest_cache
