# C4: `make demo` runs the appliance on the embedded default, `make test` runs the suite.
# Both create .venv from a clean checkout when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
C4 := $(VENV)/bin/c4
STAMP := $(VENV)/.c4-installed
# Two workers (CI has two cores; tests use their own ports, tmp dirs and processes); the slowest
# tests are listed at the end of the run.
PYTEST_ARGS ?= -n 2 --dist worksteal --durations=20

.PHONY: demo test venv lint proto docs bench clean plugin sysdeps

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(C4) demo

# System packages the tests drive for real: a C compiler for the NCCL plugin, valgrind,
# Prometheus Alertmanager (Debian's package) for the alert sink test, Prometheus itself, which
# scrapes the collector's /metrics in the exporter test, PostgreSQL for the DuckLake catalog of the
# scale-out test, and Debian's chromium for the dashboard's browser test (driven by Playwright from
# the dev extras; no browser download), and Debian's lldpd, which the fabric discovery test runs in
# network namespaces (tests/collector/test_fabric_lldpd.py).
sysdeps:
	@missing=""; for tool in cc valgrind prometheus-alertmanager prometheus chromium lldpd; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc valgrind prometheus-alertmanager prometheus postgresql chromium lldpd >/dev/null; fi

# The C4 NCCL profiler plugin, built with the system compiler.
plugin: $(STAMP)
	$(C4) agent build-plugin --out build/plugin

test: $(STAMP) sysdeps plugin
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Regenerate the committed gRPC code after editing the .proto.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. c4/telemetry/v1/telemetry.proto

# Regenerate the schema reference after editing the catalogue.
docs: $(STAMP)
	$(C4) catalogue docs > docs/schema.md

bench: $(STAMP)
	$(C4) bench ingest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache var
