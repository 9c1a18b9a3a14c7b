# The README's commands. Each target installs what it needs on first use (.venv, pinned
# packages, the Triton server binary); a second run with nothing changed installs nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCALE ?= demo

.PHONY: install system-deps nats-deps bench-deps up test lint typecheck bench bench-offline bench-triton bench-tower-shapes bench-serve loadtest drill clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[all,dev]'
	@# The Triton server binary ships in this wheel; its Python API pins numpy<2, which Feast
	@# cannot use, so it goes in without dependencies (docs/platform-notes.md).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps nvidia-pytriton==0.7.0
	@touch $@

install: $(STAMP)

# promtool/prometheus (Debian package) for the alert-rule tests and the scrape test;
# nats-server (Debian package) is the event log (JetStream) of the local stack and its tests.
system-deps: nats-deps
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

# wrk (Debian package) drives the serving benchmark: a C client costs ~50x less CPU per request
# than a Python one, so on two cores the driver does not starve what it measures.
bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# nats-server (Debian package) runs the event log; `cascade up` refuses to start without it.
nats-deps:
	@command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; }

up: $(STAMP) nats-deps
	$(VENV)/bin/cascade up --scale $(SCALE)

test: $(STAMP) system-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: bench-offline bench-triton bench-serve

bench-offline: $(STAMP)
	$(PY) -m cascade.bench.offline

bench-triton: $(STAMP)
	$(PY) -m cascade.bench.triton

bench-tower-shapes: $(STAMP)
	$(PY) -m cascade.bench.tower_shapes $(if $(DURATION),--duration $(DURATION)) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(TRITON_CPU),--triton-cpu $(TRITON_CPU))

# GATEWAY_CPU=0.5 / MF_CPU=0.5: hold the gateways and the bare app / the MF service to half a CPU.
# SCALE=tiny (default demo), DURATION=3 (seconds per row).
bench-serve: $(STAMP) bench-deps
	$(PY) -m cascade.bench.serve --scale $(SCALE) $(if $(DURATION),--duration $(DURATION)) $(if $(GATEWAY_CPU),--gateway-cpu $(GATEWAY_CPU)) $(if $(MF_CPU),--mf-cpu $(MF_CPU))

# Locust against the local stack (starts `cascade up` when nothing answers); report in var/reports/loadtest.
# GATEWAY_CPU=0.5: the gateway held to half a CPU for the run (a machine 2-3x slower; needs root).
# DURATION=30 (seconds of load), USERS=40 (Locust users, 5 req/s each), SHAPE=steady|ramp|spike.
loadtest: $(STAMP) nats-deps
	$(PY) -m cascade.drills.loadtest $(if $(GATEWAY_CPU),--gateway-cpu $(GATEWAY_CPU)) $(if $(DURATION),--duration $(DURATION)) $(if $(USERS),--users $(USERS)) $(if $(SHAPE),--shape $(SHAPE))

# Fault drills D1-D10 under load, each PASS/FAIL with its figures; report in var/reports/drills.
# D11 (bad model candidates rolled back, its own Triton and gateway) runs after them.
# GATEWAY_CPU=0.5: the drill stack's gateway held to half a CPU.
drill: $(STAMP) nats-deps
	$(PY) -m cascade.drills $(if $(GATEWAY_CPU),--gateway-cpu $(GATEWAY_CPU))
	$(PY) -m cascade.drills.d11_rollout --out var/reports/drills

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
