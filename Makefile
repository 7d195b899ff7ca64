# ctxstore — set-up, checks, tests and benchmarks. Every target creates .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: install demo test lint typecheck test-fast test-persistence test-batch-workflows \
        test-persistence-performance test-persistence-integration test-reliability crosshair test-all \
        bench bench-quick bench-ann clean services services-stop

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,torch,service,postgres,objects,ann,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ctxstore demo

lint: $(STAMP)
	$(BIN)/ruff check app ctxstore tests bench
	$(BIN)/ruff format --check app ctxstore tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict app ctxstore

# Real PostgreSQL + S3 (moto) servers for the backend tests: .ci/services.py (private temp
# folders, free loopback ports, state + env in .services/). `make services` then
# `. .services/env` to run single tests by hand; `make services-stop` kills exactly those PIDs.
SERVICES := $(PY) .ci/services.py

services: $(STAMP)
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

# Starts the servers, exports their env to pytest, stops them afterwards (also on failure or
# Ctrl-C: the trap). With CI=true a server that cannot start fails the target; elsewhere the
# last lines name the test matrices that did not run and how to run them. WITH_SERVICES runs
# its argument (a pytest command line) that way.
define WITH_SERVICES
	@$(SERVICES) start || [ "$$CI" != true ] || { $(SERVICES) stop; echo "CI: test servers did not start"; exit 1; }; \
	trap '$(SERVICES) stop >/dev/null' EXIT; trap 'exit 130' INT TERM; \
	if [ -f .services/env ]; then . ./.services/env; fi; \
	$(1); rc=$$?; \
	$(SERVICES) stop; $(SERVICES) report; exit $$rc
endef

# Every non-slow test: the backend matrix (tests/conftest.py MATRIX_MODULES on embedded,
# pg-files, pg-s3) and the quick reliability suite with the PostgreSQL crash/fault table.
test: lint typecheck
	$(call WITH_SERVICES,$(PYTEST) -q -m "not slow" -p no:cacheprovider)

test-fast: $(STAMP)
	$(PYTEST) -q -m "not slow and not integration" -x

test-persistence: $(STAMP)
	$(PYTEST) -q tests/test_store.py tests/test_records_*.py tests/test_filters.py \
		tests/test_durability.py tests/test_concurrency.py

test-batch-workflows: $(STAMP)
	$(PYTEST) -q -k "workflow or buffer"

test-persistence-integration: $(STAMP)
	$(PYTEST) -q -m integration

# The reliability suite alone, ending with its table; the PostgreSQL crash/fault rows at their
# larger counts (>= 50 client kills mid-append and mid-workflow, >= 10 server kills).
test-reliability: $(STAMP)
	$(call WITH_SERVICES,CTXSTORE_PG_CRASH=reliability $(PYTEST) -q -p no:cacheprovider tests/reliability)

# CrossHair on the pure modules (filters, codec, names, workflow rules), bounded in time (~10 s).
# app/core's pure modules carry no icontract conditions yet, so the properties are stated in
# tests/reliability/crosshair_props.py. Run by .ci/run after `make test` (installs the extra).
CROSSHAIR_MODULES := tests/reliability/crosshair_props.py app/core/filters.py app/core/codec.py \
                     app/core/names.py app/core/workflow_types.py
crosshair: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[crosshair]'
	timeout 600 $(BIN)/crosshair check --analysis_kind=icontract \
		--per_condition_timeout=4 --per_path_timeout=2 $(CROSSHAIR_MODULES)

test-persistence-performance: $(STAMP)
	$(BIN)/python -m bench --quick

test-all: $(STAMP)
	$(PYTEST) -q

# The PostgreSQL / S3 sections need the servers: started here, stopped afterwards (by PID).
bench: $(STAMP)
	@$(SERVICES) start || echo "bench: no test servers, the PostgreSQL / S3 rows are skipped"; \
	trap '$(SERVICES) stop >/dev/null' EXIT; trap 'exit 130' INT TERM; \
	if [ -f .services/env ]; then . ./.services/env; fi; \
	$(BIN)/python -m bench

# Approximate search (optional extra ann): 200k x 384 Gaussian mixture, recall@10 and per-query
# speed against exact search, build time. Outside `make bench` (the build alone takes minutes).
bench-ann: $(STAMP)
	$(BIN)/python -m bench.ann

clean:
	-$(SERVICES) stop
	rm -rf $(VENV) .services .mypy_cache .ruff_cache .pytest_cache .hypothesis
