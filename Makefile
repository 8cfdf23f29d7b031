# Fleetport: `make run` starts everything on this machine, `make test` runs the whole suite.
# Only Python 3.11 and make are needed up front; uv and every dependency are installed here.

UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
E2E_PACKAGES := mender-client mender-artifact mender-cli mender-connect dbus nats-server

.PHONY: run test test-fast lint format typecheck chart check install e2e-deps bench clean

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

install: .venv/.synced

run: install
	$(UV) run --frozen python -m common.localstack.launcher

test: install
	$(UV) run --frozen pytest

test-fast: install
	$(UV) run --frozen pytest -m "not e2e"

lint: install
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .
	$(UV) run --frozen lint-imports

format: install
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: install
	$(UV) run --frozen mypy

# The Helm chart rendered by Helm's engine and every manifest validated against the
# Kubernetes schemas, offline (tests/deploy/chart.py).
chart: install
	$(UV) run --frozen python -m tests.deploy.chart

check: lint typecheck chart

# The real Mender tools driven by tests/e2e (Debian packages; needs root).
e2e-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(E2E_PACKAGES)

bench: install
	$(UV) run --frozen python bench/gateway_bench.py

clean:
	rm -rf .venv .tools .fleetport
