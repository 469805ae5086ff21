# Umbra: the README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck proto bench bench-agent binary clean

# Debian packages: the agent's packet capture (its BPF filters are compiled by libpcap); the PostgreSQL
# server the tests start themselves (initdb and pg_ctl in /usr/lib/postgresql/15/bin); the collector's
# PDF report (WeasyPrint draws with pango); the report tests render PDF pages with poppler's pdftoppm;
# the headless browser of the console's tests (Playwright drives it; it never downloads its own);
# the zstd and 7-Zip tools write some of the archive tests' files as users make them.
DEB_PACKAGES := libpcap0.8 postgresql libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils \
	chromium zstd 7zip
# llama-cpp-python (the real model server of the tests) has no wheel on PyPI and compiles for
# about 8 minutes on 2 cores: build it once into a wheel cache that every set-up reuses.
WHEELS ?= $(HOME)/.cache/umbra/wheels
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing Debian packages:$$missing (install them as root for packet capture)"; fi; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once into $(WHEELS) (about 8 minutes on 2 cores)"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
	    $(BIN)/pip wheel -q --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); \
	fi
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[agent,collector,dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check agent collector tests bench scripts proto
	$(BIN)/mypy

lint: setup
	$(BIN)/ruff check agent collector tests bench scripts proto

typecheck: setup
	$(BIN)/mypy

proto: setup
	$(BIN)/python proto/generate.py

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The whole agent daemon's cost on this host (as root: capture on), against its goals.
bench-agent: setup
	$(BIN)/python bench/bench_agent_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/dist build/work
