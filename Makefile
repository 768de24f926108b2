# The whole workflow: `make demo` and `make test` do their own set-up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench warmup images api-docs clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m livermore_nb.demo

test: $(STAMP)
	$(BIN)/python -m pytest tests
	LIVERMORE_REDIS_DB=$(CURDIR)/.pytest_cache/nbval-redis.db $(BIN)/python -m pytest -p tests.nbval_redis --nbval-lax -p no:randomly notebooks

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check livermore_nb tests benchmarks
	$(BIN)/ruff format --check livermore_nb tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix livermore_nb tests benchmarks
	$(BIN)/ruff format livermore_nb tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

warmup: $(STAMP)
	$(BIN)/python -m benchmarks.warmup --data livermore_nb/data --out docs/warmup.md

images: $(STAMP)
	$(BIN)/python docs/render_images.py docs/img

api-docs: $(STAMP)
	$(BIN)/python docs/render_api.py docs/api.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
