# The README's commands. Everything is installed into a fresh .venv; nothing is needed by hand
# beyond python3 (>= 3.11) and the PostgreSQL server binaries (or DATABASE_URL, or pgwallet[embedded]).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-thorough lint bench bench-ledger bench-cashless bench-queue bench-payouts clean

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

test: setup lint
	$(BIN)/pytest

# Thousands of hypothesis cases per property.
test-thorough: setup
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest

# Every benchmark, one after the other (each prints its ratios and writes bench/results/<name>.json).
bench: bench-ledger bench-cashless bench-queue bench-payouts

bench-ledger: setup
	$(BIN)/python bench/run.py

bench-cashless: setup
	$(BIN)/python bench/cashless.py

bench-queue: setup
	$(BIN)/python bench/performer_queue.py

bench-payouts: setup
	$(BIN)/python bench/payouts.py

clean:
	-$(BIN)/pgwallet db down
	rm -rf $(VENV) .pgwallet .hypothesis
