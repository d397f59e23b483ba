# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-peer promtool clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/charge-capture demo

lint: $(STAMP)
	$(BIN)/ruff check rules worker tests bench
	$(BIN)/ruff format --check rules worker tests bench

typecheck: $(STAMP)
	$(BIN)/mypy rules worker

# promtool (Debian's prometheus package) checks the alert rules and runs their unit tests.
promtool:
	@command -v promtool >/dev/null 2>&1 || deploy/install-prometheus.sh

test: $(STAMP) promtool lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.check_throughput
	$(BIN)/python -m bench.stream_throughput
	$(BIN)/python -m bench.replay_throughput
	$(BIN)/python -m bench.hot_path
	$(BIN)/python -m bench.state_restore

# The peer benchmark's own environment: Quix Streams pins an older confluent-kafka than the
# tests use, so it lives apart from .venv.
PEER := .venv-peer
$(PEER)/.installed:
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install -q "quixstreams==3.28.1"
	touch $@

bench-peer: $(STAMP) $(PEER)/.installed
	$(BIN)/python -m bench.peer_quix --peer-python $(PEER)/bin/python

clean:
	rm -rf $(VENV) $(PEER) .pytest_cache .mypy_cache .ruff_cache
