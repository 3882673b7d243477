# Developer and CI entry points; every target installs what it needs into $(VENV).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTHON3 ?= python3

DEMO_DATE := 2021-01-30
DEMO_DAY_BEFORE := 2021-01-29
DEMO_DATA := demo/data

# Stamps live inside the venv so deleting the venv also forgets them; they depend on the
# packaging files so editing dependencies reinstalls on the next run.
INSTALL_STAMP := $(VENV)/.stamp-install
TEST_STAMP := $(VENV)/.stamp-install-test
BENCH_STAMP := $(VENV)/.stamp-install-bench
DEV_STAMP := $(VENV)/.stamp-install-dev
PACKAGING := setup.cfg pyproject.toml

.PHONY: help install install-test install-dev demo test fuzz fuzz-reader ensure-java lint bench bench-large bench-container clean

help:
	@echo "make install       install streamagg (editable) into $(VENV)"
	@echo "make demo          generate a sample day under $(DEMO_DATA) and aggregate it"
	@echo "make test          run the test suite"
	@echo "make fuzz          every fuzzer at a campaign's budget (FUZZ_SCALE=50 x the suite's"
	@echo "                   examples, then fuzz-reader); about an hour"
	@echo "make fuzz-reader   a long coverage-guided fuzzing campaign of the reader (atheris);"
	@echo "                   FUZZ_SECONDS=600, what it learns merged into tests/reliability/corpus"
	@echo "make lint          ruff, mypy and the import contracts (lint-imports)"
	@echo "make bench         benchmark against DuckDB, Polars, pandas and a parse-only floor"
	@echo "                   (10M rows: mixed, adlog, wide gzipped, narrow, narrow in 2,000 files)"
	@echo "make bench-container  the container tables: 192/256/512 MiB cgroups against DuckDB, Polars"
	@echo "make bench-large   the same with 100M rows, mixed shape (long; needs ~25 GB of disk)"
	@echo "make clean         remove the venv, caches and generated data"

$(PY):
	$(PYTHON3) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(INSTALL_STAMP): $(PACKAGING) | $(PY)
	$(PIP) install -e .
	@touch $@

$(TEST_STAMP): $(INSTALL_STAMP) $(PACKAGING)
	$(PIP) install -e '.[test,plot,spark]'
	@touch $@

$(DEV_STAMP): $(INSTALL_STAMP) $(PACKAGING)
	$(PIP) install -e '.[dev,plot]'
	@touch $@

$(BENCH_STAMP): $(INSTALL_STAMP) $(PACKAGING)
	$(PIP) install -e '.[bench]'
	@touch $@

install: $(INSTALL_STAMP)

install-test: $(TEST_STAMP)

install-dev: $(DEV_STAMP)

demo: install
	$(VENV)/bin/streamagg-generate --out $(DEMO_DATA) --date $(DEMO_DATE) --rows 200000 \
		--files 6 --gzip-files 1 --seed 1
	@# The day before too, smaller, so the README's backfill example has two days to run.
	$(VENV)/bin/streamagg-generate --out $(DEMO_DATA) --date $(DEMO_DAY_BEFORE) --rows 50000 \
		--files 2 --seed 2
	@# The CLI prints the summary and where the output went (under $(DEMO_DATA)/results/).
	$(VENV)/bin/streamagg $(DEMO_DATE) --source $(DEMO_DATA)

# The Spark engine's tests need a JVM (Java 17); install it where it is missing.
ensure-java:
	@if command -v java >/dev/null 2>&1; then \
		java -version 2>&1 | head -n 1; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			openjdk-17-jre-headless; \
	fi

# pytest exits 5 when it collected nothing; a suite that ran no test is a failure here.
# Two workers, one per core; loadgroup keeps the tests on the shared Spark session on one
# worker, and the cluster tests on one (see tests/conftest.py). --durations=15 shows where the
# time goes, so a run that nears the 10 minutes says which tests grew.
test: install-test ensure-java
	@$(PY) tests/cold_libraries.py $(VENV)
	@rc=0; $(PY) -m pytest -q -n 2 --dist loadgroup --durations=15 || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The suite fuzzes the reader for a few seconds (tests/reliability/test_fuzz_reader.py); this is
# the long campaign. New inputs gather in $(FUZZ_DIR); those that reach new code are merged into
# the corpus kept in tests/, and a finding (crash-*, timeout-*) is written to $(FUZZ_DIR).
FUZZ_SECONDS ?= 600
FUZZ_DIR ?= .fuzz
READER_CORPUS := tests/reliability/corpus/reader
# The script runs itself (libFuzzer's merge starts it again as argv[0]): the venv's python first.
fuzz-reader: install-test
	mkdir -p $(FUZZ_DIR)/reader
	PATH="$(abspath $(VENV))/bin:$$PATH" tests/reliability/fuzz_reader.py \
		-max_total_time=$(FUZZ_SECONDS) -timeout=30 -dict=$(READER_CORPUS).dict \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/reader $(READER_CORPUS)
	PATH="$(abspath $(VENV))/bin:$$PATH" tests/reliability/fuzz_reader.py -merge=1 \
		$(READER_CORPUS) $(FUZZ_DIR)/reader

# Every fuzzer the project has, at a campaign's budget: each hypothesis fuzzer marked `fuzz`
# (option values, the reader's bytes, S3 listings paged wrongly, any S3 key, credentials in
# URIs) at FUZZ_SCALE times its examples, new ones each run (tests/fuzzing.py), then the
# reader's coverage-guided campaign (fuzz-reader, FUZZ_SECONDS). About an hour at the defaults.
FUZZ_SCALE ?= 50
fuzz: install-test
	STREAMAGG_FUZZ_SCALE=$(FUZZ_SCALE) $(PY) -m pytest -q -n 2 -m fuzz tests
	$(MAKE) fuzz-reader FUZZ_SECONDS=$(FUZZ_SECONDS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy streamagg
	$(VENV)/bin/lint-imports

# Five days of 10M rows, one after the other, each writing its own results/<name>.md: mixed
# (every rule of the contract), adlog, wide and gzipped (long text, as logs land in S3), narrow,
# and narrow in 2,000 small files. Extra options for run.py go in BENCH_ARGS, e.g.
# BENCH_ARGS="--skip pandas streamagg-spark".
BENCH_ARGS ?=
bench: install $(BENCH_STAMP)
	$(PY) benchmarks/run.py --rows 10000000 --files 24 --shape mixed $(BENCH_ARGS)
	$(PY) benchmarks/run.py --rows 10000000 --files 24 --shape adlog $(BENCH_ARGS)
	$(PY) benchmarks/run.py --rows 10000000 --files 24 --shape wide --gzip $(BENCH_ARGS)
	$(PY) benchmarks/run.py --rows 10000000 --files 24 --shape narrow $(BENCH_ARGS)
	$(PY) benchmarks/run.py --rows 10000000 --files 2000 --shape narrow $(BENCH_ARGS)
	$(PY) benchmarks/incremental.py --rows 10000000 --files 24

# streamagg, DuckDB and Polars in 192, 256 and 512 MiB memory cgroups on the 10M-row adlog day,
# then the other days of `make bench`: streamagg in 256 MiB beside DuckDB in 512 MiB, each beside
# its run without a limit (needs root and a cgroup memory controller): results/container-*.md.
CONTAINER_REPEATS ?= 3
bench-container: install $(BENCH_STAMP)
	$(PY) benchmarks/container.py --rows 10000000 --files 24 --shape adlog
	$(PY) benchmarks/container.py --rows 10000000 --files 24 --shape mixed --cases short \
		--repeats $(CONTAINER_REPEATS)
	$(PY) benchmarks/container.py --rows 10000000 --files 24 --shape wide --gzip --cases short \
		--repeats $(CONTAINER_REPEATS)
	$(PY) benchmarks/container.py --rows 10000000 --files 24 --shape narrow --cases short \
		--repeats $(CONTAINER_REPEATS)
	$(PY) benchmarks/container.py --rows 10000000 --files 2000 --shape narrow --cases short \
		--repeats $(CONTAINER_REPEATS)

bench-large: install $(BENCH_STAMP)
	$(PY) benchmarks/run.py --rows 100000000 --files 96 --repeats 1 --shape mixed --skip pandas \
		$(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz \
		demo benchmarks/data benchmarks/runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
