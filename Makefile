# Set-up contract: `make demo` and `make test` build .venv from scratch on a machine with
# Python 3.11 and make only, and are fast no-ops for the install step when nothing changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean services

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/processtwin demo --out-dir report

# Real components the tests start themselves (a Mosquitto broker on a loopback port):
# installed from Debian's packages when missing.
services:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing mosquitto (Debian package) for the MQTT tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install \
	    -y -qq --no-install-recommends mosquitto >/dev/null; }

test: $(STAMP) services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python experiments/bench/bench_simulate.py
	$(BIN)/python experiments/bench/bench_vector.py
	$(BIN)/python experiments/bench/bench_estimate.py
	$(BIN)/python -W ignore experiments/bench/bench_nmpc.py
	$(BIN)/python -W ignore experiments/bench/bench_mhe.py
	$(BIN)/python experiments/bench/bench_recipe.py
	$(BIN)/python experiments/bench/bench_thermal.py
	$(BIN)/python experiments/bench/bench_empc.py
	$(BIN)/python experiments/bench/bench_twin.py

clean:
	rm -rf $(VENV) report build *.egg-info
