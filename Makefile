# One command per habit: `make run` (the main job), `make test` (lint + types + tests), `make bench`.
# Every target installs what it needs into .venv from nothing (Python 3.11 and make are the only prerequisites).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RECSYS_DATA_DIR ?= $(abspath ../shared/data)
export PREFECT_HOME ?= $(abspath .prefect)
export BENTOML_HOME ?= $(abspath .bentoml)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0

.PHONY: install run test lint typecheck pytest audit bench bench-models bench-serve bench-soak bench-abuse bench-scale bench-profile bench-experiments bench-cluster cluster-up cluster-down serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# Prefect's database (PREFECT_HOME) migrated once here rather than by the first run's temporary server:
	# a fresh clone's first `make run` starts its flow in 7.6 s instead of 12.3 s.
	$(BIN)/prefect server database upgrade -y > /dev/null
	touch $(STAMP)

install: $(STAMP)

# axe-core (accessibility rules) for the browser tests, from the npm registry with the machine's npm.
AXE := .axe/node_modules/axe-core/axe.min.js
$(AXE):
	npm install --no-save --no-audit --no-fund --prefix .axe axe-core@4.14.1 > /dev/null

run: install
	$(BIN)/recsys run

lint: install
	$(BIN)/ruff check recsys flows benchmarks tests
	$(BIN)/ruff format --check recsys flows benchmarks tests
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

# HAProxy (Debian's) for the several-host tests, which need root for their network namespaces (CI has it).
pytest: install $(AXE)
	command -v haproxy >/dev/null || [ "$$(id -u)" != 0 ] || apt-get install -y -qq haproxy
	$(BIN)/pytest -q --timeout=900 $(PYTEST_ARGS)

test: lint typecheck pytest

# Known vulnerabilities in the pinned dependencies (pip-audit); CI prints the summary.
audit: install
	$(BIN)/python scripts/audit.py

# Every benchmark: models, the service beside a bare app, the soak (about 6 minutes on 2 cores).
bench: bench-models bench-serve bench-soak

bench-models: install
	$(BIN)/python -m benchmarks.models

# Load test of /recommend beside a bare Starlette app (wrk from Debian drives both, on loopback);
# BENCH_SERVE_ARGS=--experiment interleave also measures the service running an experiment;
# BENCH_SERVE_ARGS='--replicas 2' measures two replicas through HAProxy instead (root: benchmarks/cluster.py);
# BENCH_SERVE_ARGS='--model ranker' serves the project's two-stage ranker (models/, after make run) instead.
bench-serve: install
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	command -v haproxy >/dev/null || apt-get install -y -qq haproxy
	$(BIN)/python -m benchmarks.serve $(BENCH_SERVE_ARGS)

# The several-host topology (root): coordination delay over 100 changes, failover when a replica is killed,
# two replicas through HAProxy against one (also `make bench-serve BENCH_SERVE_ARGS='--replicas 2'`).
bench-cluster: install
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	command -v haproxy >/dev/null || apt-get install -y -qq haproxy
	bash scripts/postgres.sh install
	$(BIN)/python -m benchmarks.cluster $(BENCH_CLUSTER_ARGS)

# Soak: ~80 % of the measured capacity held for 60 s; errors, p99 vs unloaded, worker RSS growth.
bench-soak: install
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m benchmarks.soak

# /recommend p99 while anonymous callers hammer /search and erasures beside it, against p99 without them.
bench-abuse: install
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m benchmarks.abuse $(BENCH_ABUSE_ARGS)

# The loop on generated data at S1, S10 and S50 (synthetic source): per-step time, peak RSS, growth.
# About an hour on 2 cores; BENCH_SCALE_ARGS='--sizes S1,S10' for a quick look.
bench-scale: install
	$(BIN)/python -m benchmarks.scale $(BENCH_SCALE_ARGS)

# The hybrid's validation quality per training minute on generated data (after bench-scale made the data):
# which settings a large catalogue should train with (recsys/presets/large-catalogue.yaml).
bench-profile: install
	$(BIN)/python -m benchmarks.profile $(BENCH_PROFILE_ARGS)

# Sessions an A/B test and an interleaving test need to pick the better model (after make run).
bench-experiments: install
	$(BIN)/python -m benchmarks.experiments

serve: install
	$(BIN)/recsys serve

# The reference topology on several hosts (network namespaces, root): PostgreSQL, Prefect server and worker,
# two replicas behind HAProxy, Dask. Publishes this checkout's champion (after make run); docs/deployment.md.
cluster-up: install
	command -v haproxy >/dev/null || apt-get install -y -qq haproxy
	bash scripts/postgres.sh install
	$(BIN)/recsys cluster up

cluster-down: install
	$(BIN)/recsys cluster down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
