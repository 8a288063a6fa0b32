# ltbench: `make test` and `make leaderboard` work on a fresh machine (they create .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUITE ?= benchmarks/default.yaml
JOBS ?= 2
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= disabled

.PHONY: setup test test-fast leaderboard speed clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

leaderboard: setup
	$(VENV)/bin/ltbench leaderboard $(SUITE) --jobs $(JOBS)

speed: setup
	$(PY) benchmarks/speed.py --config configs/ce_digits_lt.yaml --batch-size 64 --device cpu

clean:
	rm -rf runs leaderboard .pytest_cache
