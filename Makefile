# The README's commands. Everything is installed into a fresh .venv; nothing is needed by hand
# beyond python3 (>= 3.11) and the PostgreSQL server binaries (or DATABASE_URL, or pgwallet[embedded]).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test browser test-faults pgbouncer test-thorough lint bench bench-ledger bench-cashless bench-queue bench-payouts bench-http clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# Starts the embedded server unless DATABASE_URL is set, migrates, runs the demonstration.
run: setup
	@url="$${DATABASE_URL:-$$($(BIN)/pgwallet db up)}" && \
	  echo "database: $$url" && \
	  DATABASE_URL="$$url" $(BIN)/pgwallet migrate && \
	  DATABASE_URL="$$url" $(BIN)/pgwallet demo

lint: setup
	$(BIN)/ruff check pyapp cli tests bench
	$(BIN)/mypy

test: setup lint browser
	$(BIN)/pytest

# Debian's chromium for the admin page's browser test (Playwright drives it): installed when missing and
# root, else that test is skipped with a message.
browser:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "chromium is missing and this is not root: the browser test will be skipped"; fi

# The fault suites on real clusters: kill -9 under load, failover to a synchronous standby, PgBouncer in
# transaction mode. Each prints its figures (acknowledged, lost, duplicated, in doubt and how each was settled).
test-faults: setup pgbouncer
	$(BIN)/pytest -m faults tests/faults -s

# Debian's pgbouncer for the PgBouncer suite: installed when missing and root, else that suite is skipped.
pgbouncer:
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing pgbouncer (apt-get)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends pgbouncer >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends pgbouncer >/dev/null; } || \
	  echo "pgbouncer could not be installed: its suite will be skipped"; \
	else echo "pgbouncer is missing and this is not root: its suite will be skipped"; fi

# Thousands of hypothesis cases per property.
test-thorough: setup
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest

# Every benchmark, one after the other (each prints its ratios and writes bench/results/<name>.json).
bench: bench-ledger bench-cashless bench-queue bench-payouts bench-http

bench-ledger: setup
	$(BIN)/python bench/run.py

bench-cashless: setup
	$(BIN)/python bench/cashless.py

bench-queue: setup
	$(BIN)/python bench/performer_queue.py

bench-payouts: setup
	$(BIN)/python bench/payouts.py

bench-http: setup
	$(BIN)/python bench/http_service.py

clean:
	-$(BIN)/pgwallet db down
	rm -rf $(VENV) .pgwallet .hypothesis
