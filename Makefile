# The two commands: `make demo` and `make test`. Each builds .venv from scratch if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv lint bench clean

$(STAMP): pyproject.toml requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/stoke demo

test: $(STAMP)
	$(BIN)/ruff check stoke tests benchmarks
	$(BIN)/python -m tests.run_all

lint: $(STAMP)
	$(BIN)/ruff check stoke tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/pipeline_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
