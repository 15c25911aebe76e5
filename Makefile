# Two commands: `make demo` (install + run the main job on the demo model) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Free disk space the install needs (KB): the venv takes about 2 GB and pip unpacks wheels beside it.
MIN_FREE_KB ?= 3000000

.PHONY: install demo test lint bench clean chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip

# torch first, pinned: a plain `torch` requirement would pull several GB of CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	@avail=$$(df -Pk . | awk 'NR==2 {print $$4}'); [ "$$avail" -ge $(MIN_FREE_KB) ] || \
	  { echo "error: installing needs $$(($(MIN_FREE_KB) / 1024)) MB of free disk space here; $$((avail / 1024)) MB free"; exit 1; }
	$(BIN)/pip install -q --no-cache-dir torch==2.13.0
	$(BIN)/pip install -q --no-cache-dir -e ".[hf,remove,web,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/unredact demo --out runs/demo

# Browser tests drive Debian's chromium (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; } \
	  || echo "warning: could not install chromium; browser tests need /usr/bin/chromium"

test: $(STAMP) chromium
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(STAMP)
	$(BIN)/python bench/audit_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
