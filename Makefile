# Two entry points (see README): `make demo` runs the lifecycle on the sample models,
# `make test` installs everything and runs lint, type checks and the whole test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
ENGINE ?= $(shell command -v docker || command -v podman)
EXTRAS ?= s3
IMAGE ?= mserve:$(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

.PHONY: demo test lint docs samples bench image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

demo: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	bash sample_models/demo.sh build/demo-models

test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all,test]'
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy mserve cli converters

docs:
	$(BIN)/python tests/cli_reference.py --write README.md

samples:
	$(BIN)/python sample_models/build.py

bench:  # benchmarks/server.py also needs wrk (apt-get install -y wrk)
	$(BIN)/python benchmarks/cli.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/promote.py
	$(BIN)/python benchmarks/bench_harness.py

image:  # where a container engine runs (docker or podman); EXTRAS=s3,gcs for more
	@test -n "$(ENGINE)" || { echo "make image: needs docker or podman" >&2; exit 3; }
	$(ENGINE) build --build-arg EXTRAS=$(EXTRAS) -t $(IMAGE) .

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
