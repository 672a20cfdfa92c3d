# budgetwatch — the two commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-quick clean install compiled

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The core's hot path compiled with mypyc (compiled_core.py): rebuilt when a source of
# budget/ or alerts/ changes; until then, or without a C compiler, the sources run.
COMPILED := build/compiled/manifest.json
$(COMPILED): $(STAMP) compiled_core.py tools/compile_core.py $(shell find budget alerts -name '*.py')
	$(BIN)/python tools/compile_core.py

compiled: $(COMPILED)

demo: $(STAMP) $(COMPILED)
	$(BIN)/budgetwatch demo --dir demo

test: $(STAMP) $(COMPILED)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check budget alerts connectors streams tests bench tools compiled_core.py
	$(BIN)/mypy

bench: $(STAMP) $(COMPILED)
	$(BIN)/python -m bench

bench-quick: $(STAMP) $(COMPILED)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) demo build .pytest_cache .mypy_cache .ruff_cache
