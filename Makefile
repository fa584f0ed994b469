# The two commands of README.md. Both run as root on a fresh Debian 12 machine.
#   make demo   sets everything up and runs a busybox container in a VM
#   make test   sets everything up and runs the tests
# `setup` is a user's install (packaging/setup-host.sh: /opt/kata-runtime/venv, not tied to this
# checkout); the tests run this checkout from a development venv of their own (tests/setup.sh).
VENV ?= /opt/kata-runtime/venv
DEV ?= /opt/kata-dev
PY := $(DEV)/bin/python

.PHONY: setup dev-setup demo test unit oci bats lint bench
setup:
	packaging/setup-host.sh

dev-setup: setup
	tests/setup.sh

demo: setup
	tests/demo.sh

test: dev-setup lint
	KATA=$(DEV)/bin/kata-runtime bats tests/bats
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/oci tests/cri tests/reliability

unit:
	$(PY) -m pytest -q tests/unit

oci:
	$(PY) -m pytest -q tests/oci

bats:
	KATA=$(DEV)/bin/kata-runtime bats tests/bats

lint:
	$(DEV)/bin/ruff check kata_runtime tests benchmarks
	$(DEV)/bin/mypy kata_runtime

bench: dev-setup
	$(PY) benchmarks/suite.py --json benchmarks/results/suite.json --plots benchmarks/results
