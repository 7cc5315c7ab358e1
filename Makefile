# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install browser demo lint test test-fast dev bench bench-ui clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The browser tests drive Debian's `chromium` (Playwright's own download is not used). Installed when
# missing and apt-get can run as root or through sudo without a password; otherwise they skip.
APT_GET = $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get -qq
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 \
		|| { [ "$$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; } \
		|| { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends \
			chromium fonts-liberation fonts-dejavu-core >/dev/null; } \
		|| echo "make: could not install chromium with apt-get: the browser tests will skip"

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp -n stedi_assets/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/stedi generate --out data/landing
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/stedi run --landing data/landing --lakehouse lakehouse

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint browser
	$(BIN)/python -m pytest

# The inner loop: no S3 or web servers, no reference data, no slow tests, on two workers (about 3 min).
test-fast: lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not s3 and not reference"

dev: install $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dg dev

# The benchmark of issue 8 (not part of `make test`): stedi run against plain Polars, DuckDB and the
# JSON parse floor at 1x, 10x and 100x the reference data. Options: make bench SCALES="1 10" REPEATS=5
# BENCH_DIR=/tmp/stedi-bench (generated data is reused there); see benchmarks/README.md.
BENCH_ARGS = $(if $(SCALES),--scales "$(SCALES)") $(if $(REPEATS),--repeats $(REPEATS)) $(if $(BENCH_DIR),--bench-dir "$(BENCH_DIR)")
bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# A run launched from the web UI against `stedi run` on the same data (make bench-ui SCALE=100).
bench-ui: install
	$(BIN)/python -m benchmarks.ui_run $(if $(SCALE),--scale $(SCALE)) $(if $(REPEATS),--repeats $(REPEATS)) $(if $(BENCH_DIR),--bench-dir "$(BENCH_DIR)")

clean:
	rm -rf data lakehouse .dagster_home
