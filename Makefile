# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-compiled bench-peer promtool clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/charge-capture demo

lint: $(STAMP)
	$(BIN)/ruff check rules worker tests bench setup.py
	$(BIN)/ruff format --check rules worker tests bench setup.py

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

# The same benchmarks against the compiled build (setup.py, as the Docker image builds it): the
# wheel installed in .compiled, first on the path; -P keeps the checkout's own sources off it.
COMPILED := .compiled
$(COMPILED)/.installed: $(STAMP) setup.py pyproject.toml $(wildcard rules/*.py worker/*/*.py)
	rm -rf $(COMPILED) build  # build/: an earlier build's extension modules would join in
	CHARGE_CAPTURE_COMPILE=1 $(BIN)/python -m pip install --quiet --no-deps \
		--no-build-isolation --target $(COMPILED) .
	touch $@

# (The schemas as the image finds them: a --target install has no share/ of its own.)
RUN_COMPILED := PYTHONPATH=$(COMPILED) CHARGE_CAPTURE_SCHEMAS_DIR=$(CURDIR)/schemas $(BIN)/python -P
bench-compiled: $(COMPILED)/.installed
	$(RUN_COMPILED) -m bench.check_throughput
	$(RUN_COMPILED) -m bench.stream_throughput
	$(RUN_COMPILED) -m bench.hot_path

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
	rm -rf $(VENV) $(PEER) $(COMPILED) .pytest_cache .mypy_cache .ruff_cache
