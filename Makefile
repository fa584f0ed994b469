# The two commands of README.md. Both run as root on a fresh Debian 12 machine.
#   make demo   sets everything up and runs a busybox container in a VM
#   make test   sets everything up and runs the tests
VENV ?= /opt/kata-runtime/venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit oci bats lint bench
setup:
	packaging/setup-host.sh

demo: setup
	tests/demo.sh

test: setup lint
	KATA=$(VENV)/bin/kata-runtime bats tests/bats
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/oci

unit:
	$(PY) -m pytest -q tests/unit

oci:
	$(PY) -m pytest -q tests/oci

bats:
	KATA=$(VENV)/bin/kata-runtime bats tests/bats

lint:
	$(VENV)/bin/ruff check kata_runtime tests benchmarks
	$(VENV)/bin/mypy kata_runtime

bench: setup
	$(PY) benchmarks/run.py
