# Umbra: the README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: setup setup-run demo test lint typecheck proto bench bench-agent binary clean

# Debian packages, in two sets. What the agent and the collector use when they run (`make demo`):
# the agent's packet capture (its BPF filters are compiled by libpcap); the collector's PDF report
# (WeasyPrint draws with pango).
RUN_DEB_PACKAGES := libpcap0.8 libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
# What the tests use besides (`make test`): the PostgreSQL server the tests start themselves (initdb
# and pg_ctl in /usr/lib/postgresql/15/bin); poppler's pdftoppm renders report pages; the headless
# browser of the console's tests (Playwright drives it; it never downloads its own); the zstd and
# 7-Zip tools write some of the archive tests' files as users make them; systemd's systemd-analyze
# verifies the agent's unit (tests/build).
TEST_DEB_PACKAGES := postgresql poppler-utils chromium zstd 7zip systemd
# llama-cpp-python (the real model server of the tests) has no wheel on PyPI and compiles for
# about 8 minutes on 2 cores: build it once into a wheel cache that every test set-up reuses. The
# demo never needs it.
WHEELS ?= $(HOME)/.cache/umbra/wheels
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)

# apt-get install the packages of $(1) that are missing (as root; otherwise say which are missing)
define deb_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing Debian packages:$$missing (install them as root)"; fi; \
	fi
endef

# The demo writes a small GGUF model file with the gguf library (tests/fixtures/tiny_gguf.py): its
# pins and numpy's, taken from the dev extra, where they live.
DEMO_PINS := $(shell sed -n 's/^ *"\(gguf==[0-9.]*\|numpy==[0-9.]*\)",.*/\1/p' pyproject.toml)

# What the demo runs: the agent and the collector, and the demo's model-file writer.
setup-run: $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	$(call deb_install,$(RUN_DEB_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[agent,collector]' $(DEMO_PINS)
	@touch $(RUN_STAMP)

# Everything: the above, and the test and build tools (the dev extra, llama-cpp-python from the cache).
setup: $(STAMP)

$(STAMP): $(RUN_STAMP)
	$(call deb_install,$(TEST_DEB_PACKAGES))
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once into $(WHEELS) (about 8 minutes on 2 cores)"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" \
	    $(BIN)/pip wheel -q --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); \
	fi
	$(BIN)/pip install -q --find-links $(WHEELS) -e '.[agent,collector,dev]'
	@touch $(STAMP)

demo: setup-run
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check agent collector tests bench scripts proto
	$(BIN)/ruff format --check agent collector tests bench scripts proto
	$(BIN)/mypy

lint: setup
	$(BIN)/ruff check agent collector tests bench scripts proto
	$(BIN)/ruff format --check agent collector tests bench scripts proto

typecheck: setup
	$(BIN)/mypy

proto: setup
	$(BIN)/python proto/generate.py

# The one-file agent for Linux x86-64 (build/umbra-agent.spec says what goes in and what stays out).
DIST ?= build/dist
WORK ?= build/work
binary: setup
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath $(DIST) --workpath $(WORK) \
	  build/umbra-agent.spec
	@ls -l $(DIST)/umbra-agent

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The whole agent daemon's cost on this host (as root: capture on), against its goals.
bench-agent: setup
	$(BIN)/python bench/bench_agent_cost.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/dist build/work
