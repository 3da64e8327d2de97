# openpod: two commands do everything on a fresh machine.
#   make up    install what is missing, run control plane + a local node, configure the CLI
#   make test  install what is missing, run ruff, mypy, import-layer contracts and pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := contracts/node_modules/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: up test lint typecheck contracts solidity pytest bench bench-deps deps node-deps system-deps clean

up: deps
	$(BIN)/openpod up --data-dir $(CURDIR)/.openpod

test: deps lint typecheck contracts solidity pytest

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: deps
	$(BIN)/mypy

contracts: deps
	$(BIN)/lint-imports

# The Solidity sources compile (solc-js, pinned in contracts/package-lock.json) to exactly the
# artifacts committed under the Python package; `make solidity-build` rewrites them.
solidity: node-deps
	cd contracts && node compile.mjs --check

solidity-build: node-deps
	cd contracts && node compile.mjs

pytest: deps
	$(BIN)/pytest -q -p no:cacheprovider

bench: deps bench-deps
	$(BIN)/python -m bench.pod_startup
	$(BIN)/python -m bench.docker_startup
	$(BIN)/python -m bench.edge
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.meter
	$(BIN)/python -m bench.metering
	$(BIN)/python -m bench.payments_gas
	$(BIN)/python -m bench.payments
	$(BIN)/python -m bench.hot_wallet
	$(BIN)/python -m bench.cp
	$(BIN)/python -m bench.transfer

# The references the benchmarks measure against (nginx) and their load generator (wrk).
bench-deps:
	@missing=""; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deps: system-deps $(STAMP) node-deps

# solc-js, OpenZeppelin and anvil (the dev chain), from npm.
node-deps: $(NODE_STAMP)

$(NODE_STAMP): contracts/package.json contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the platform and its tests run for real (sshd in pods, bubblewrap to isolate
# them, PostgreSQL for the store tests, busybox and dash to run the boot script in several
# shells, SoftHSM2 for the hot wallet's key, Chromium for the /transfer page's tests, dockerd and
# mmdebstrap for the Docker runtime's tests, which build their pod image offline). Installed only when
# absent; needs root (as on the dev and CI machines).
system-deps:
	@missing=""; \
	command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ssh >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v rsync >/dev/null 2>&1 || missing="$$missing rsync"; \
	command -v busybox >/dev/null 2>&1 || missing="$$missing busybox"; \
	command -v dash >/dev/null 2>&1 || missing="$$missing dash"; \
	command -v softhsm2-util >/dev/null 2>&1 || missing="$$missing softhsm2"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing="$$missing docker.io"; \
	command -v mmdebstrap >/dev/null 2>&1 || missing="$$missing mmdebstrap"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root or install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
