# Every Fulcrum workflow: `make up`, `make test`, `make lint`, `make bench`.
# Works on a fresh Debian with Python 3.11: creates .venv, installs with uv, apt-installs system
# tools when run as root. Everything is non-interactive.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
# The Ansible tool venv of tests/e2e/test_ansible.py (its own pins, see its requirements.txt).
ANSIBLE_VENV ?= .venv-ansible
ANSIBLE_REQUIREMENTS := tests/e2e/ansible/requirements.txt
PY := $(VENV)/bin/python
# The installer of both venvs: uv (pinned in constraints.txt, pip-installed into $(VENV) first)
# resolves and installs in parallel, some 20 s where pip took about three minutes.
UV := $(VENV)/bin/uv
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
STATE ?= .state
CLUSTER_STATE ?= .state-cluster
# Amphora hosts of the cluster stack: netns hosts need root; 0 runs the process driver.
CLUSTER_HOSTS ?= $(shell [ "$$(id -u)" -eq 0 ] && echo 2 || echo 0)
# `make up` serves the API over HTTPS (a certificate of the deployment CA; the clouds.yaml it
# writes trusts that CA); UP_ARGS="--state-dir $(STATE)" serves plain HTTP.
UP_ARGS ?= --https --state-dir $(STATE)
UP_TIMEOUT ?= 130
PYTEST_ARGS ?=
# `make test` runs on this many pytest-xdist workers (tests/conftest.py groups what must share one),
# then FUZZ_TESTS on as many, spread test by test (`--dist load`; each worker serves its own API):
# `--dist loadscope` keeps a module on one worker, and schemathesis' module is 162 tests.
TEST_WORKERS ?= 2
FUZZ_TESTS := tests/integration/api/test_schemathesis.py

export DEBIAN_FRONTEND := noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# command:debian-package pairs that `sysdeps` makes sure exist.
SYSDEP_TOOLS := haproxy:haproxy keepalived:keepalived ip:iproute2 wrk:wrk ping:iputils-ping etcd:etcd-server nft:nftables conntrack:conntrack prometheus:prometheus chromium:chromium

.PHONY: help venv ansible-venv sysdeps test test-unit test-integration test-e2e up down status lint \
	bench up-cluster down-cluster status-cluster

help:
	@echo "make up                start the whole stack in the background (state in $(STATE)/)"
	@echo "make down              stop it (and its amphorae)"
	@echo "make status            each part of it: pid, uptime, restarts, ready"
	@echo "make up-cluster | down-cluster | status-cluster   the cluster stack (state in"
	@echo "                       $(CLUSTER_STATE)/): 3 NATS nodes, Patroni Postgres, 2 replicas"
	@echo "                       of each service behind an HAProxy front, amphorae on"
	@echo "                       CLUSTER_HOSTS=$(CLUSTER_HOSTS) netns hosts (docs/deployment.md)"
	@echo "make test              run every test (creates $(VENV), installs system tools as root)"
	@echo "make test-unit | test-integration | test-e2e"
	@echo "make lint              ruff + mypy --strict + lint-imports (import rules)"
	@echo "make bench             run every bench/*.py"
	@echo "make venv | ansible-venv | sysdeps   only prepare the environment"
	@echo "make dockerd | dockerd-stop   a private docker engine (networks in 198.18.0.0/15)"
	@echo "make images            the amphora and control-plane images, built locally"
	@echo "make test-images       the same in the docker tests' engine (make test does it first)"
	@echo "make compose-up | compose-down | compose-logs   deploy/compose.yaml on that engine"

# Root: apt-get install what is missing (one `apt-get update` per run). Not root: only report.
# python3-venv is needed too when the interpreter cannot create virtualenvs (bare Debian).
sysdeps:
	@missing=""; \
	for pair in $(SYSDEP_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || [ -x /sbin/$$tool ] \
	    || missing="$$missing $$pkg"; \
	done; \
	if [ ! -x "$(PY)" ] && [ -n "$(PYTHON)" ] && ! "$(PYTHON)" -c 'import ensurepip' 2>/dev/null; then \
	  missing="$$missing python3-venv"; \
	fi; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "sysdeps: apt-get install$$missing"; \
	  apt-get update -q && apt-get install -y -q$$missing; \
	else \
	  echo "sysdeps: missing$$missing; as root run: apt-get install -y$$missing"; \
	fi

# Both venvs and the checkout's own modules are compiled to bytecode ahead: where Python is told
# not to write it (PYTHONDONTWRITEBYTECODE, as on this project's CI machines), every process
# would otherwise compile what it imports, each time (`fulcrum up` was ready in ~10 s, ~6 s
# compiled). compileall skips the files whose bytecode is current.
venv: $(VENV)/.installed
	@$(PY) -m compileall -q -j 0 libs services deploy tests bench >/dev/null

$(VENV)/.installed: pyproject.toml constraints.txt | sysdeps
	@if [ ! -x "$(PY)" ]; then \
	  [ -n "$(PYTHON)" ] || { echo "no python3.11 or python3 on PATH" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; "$(PYTHON)" -m venv $(VENV); \
	fi
	$(PY) -m pip install -q -c constraints.txt uv
	$(UV) pip install -q --compile-bytecode --python $(PY) -e '.[test]' -c constraints.txt
	@touch $@

ansible-venv: $(ANSIBLE_VENV)/.installed

$(ANSIBLE_VENV)/.installed: $(ANSIBLE_REQUIREMENTS) | venv
	@if [ ! -x "$(ANSIBLE_VENV)/bin/python" ]; then "$(PYTHON)" -m venv $(ANSIBLE_VENV); fi
	$(UV) pip install -q --compile-bytecode --python $(ANSIBLE_VENV)/bin/python -r $(ANSIBLE_REQUIREMENTS)
	@touch $@

test: venv ansible-venv sysdeps test-images
	FULCRUM_ANSIBLE_VENV=$(abspath $(ANSIBLE_VENV)) $(VENV)/bin/pytest -q -x --timeout=300 \
	  -n $(TEST_WORKERS) --dist loadscope --ignore=$(FUZZ_TESTS) $(PYTEST_ARGS) tests
	$(VENV)/bin/pytest -q -x --timeout=300 -n $(TEST_WORKERS) --dist load $(PYTEST_ARGS) $(FUZZ_TESTS)

# Exit status 5 means "no tests collected": an empty folder is not a failure.
test-e2e: ansible-venv
test-unit test-integration test-e2e: test-%: venv sysdeps
	FULCRUM_ANSIBLE_VENV=$(abspath $(ANSIBLE_VENV)) \
	  $(VENV)/bin/pytest -q --timeout=300 $(PYTEST_ARGS) tests/$* || [ $$? -eq 5 ]

# `fulcrum up` writes $(STATE)/ready once serving and may write $(STATE)/endpoint.txt.
up: venv sysdeps
	@mkdir -p $(STATE)
	@if [ -f $(STATE)/fulcrum.pid ] && kill -0 "$$(cat $(STATE)/fulcrum.pid)" 2>/dev/null; then \
	  echo "already running (pid $$(cat $(STATE)/fulcrum.pid)); 'make down' first"; \
	  if [ -f $(STATE)/endpoint.txt ]; then cat $(STATE)/endpoint.txt; fi; \
	  exit 0; \
	fi; \
	rm -f $(STATE)/ready $(STATE)/endpoint.txt; \
	setsid nohup $(VENV)/bin/fulcrum up $(UP_ARGS) </dev/null >>$(STATE)/fulcrum.log 2>&1 & \
	pid=$$!; echo $$pid > $(STATE)/fulcrum.pid; \
	for _ in $$(seq $$(( $(UP_TIMEOUT) * 10 ))); do \
	  [ -f $(STATE)/ready ] && break; \
	  if ! kill -0 $$pid 2>/dev/null; then \
	    echo "fulcrum up exited; last lines of $(STATE)/fulcrum.log:" >&2; \
	    tail -n 40 $(STATE)/fulcrum.log >&2; rm -f $(STATE)/fulcrum.pid; exit 1; \
	  fi; \
	  sleep 0.1; \
	done; \
	if [ ! -f $(STATE)/ready ]; then \
	  echo "not ready after $(UP_TIMEOUT) s (pid $$pid still running); see $(STATE)/fulcrum.log" >&2; \
	  exit 1; \
	fi; \
	echo "fulcrum is up (pid $$pid, log $(STATE)/fulcrum.log)"; \
	if [ -f $(STATE)/endpoint.txt ]; then cat $(STATE)/endpoint.txt; fi

# The same three for the cluster stack (fulcrum up --cluster), under its own state dir.
up-cluster down-cluster status-cluster: %-cluster:
	@$(MAKE) --no-print-directory $* STATE=$(CLUSTER_STATE) \
	  UP_ARGS="--cluster --amphora-hosts $(CLUSTER_HOSTS) --state-dir $(CLUSTER_STATE)" \
	  UP_TIMEOUT=240

# Stops `fulcrum up` (or, if it was killed, the supervisord it left), then the amphorae.
down:
	@if [ -x $(VENV)/bin/fulcrum ]; then $(VENV)/bin/fulcrum down --state-dir $(STATE); \
	else echo "not running (no $(VENV))"; fi
	@rm -f $(STATE)/fulcrum.pid $(STATE)/ready

# Each part of the running stack (pid, uptime, restarts, ready); exit 0 only when all is ready.
status: venv
	@$(VENV)/bin/fulcrum status --state-dir $(STATE)

lint: venv
	$(VENV)/bin/ruff check libs services deploy
	$(VENV)/bin/mypy libs services deploy
	$(VENV)/bin/lint-imports

# Every bench/*.py except private helpers (_*.py); each prints its own ratios.
bench: venv sysdeps
	@set -e; for f in bench/*.py; do \
	  case "$$(basename $$f)" in _*) continue;; esac; \
	  [ -e "$$f" ] || continue; \
	  echo "== $$f"; $(PY) $$f; \
	done

# -- docker: a private engine, the images, the compose stack ---------------------------------
# `make dockerd` runs a private dockerd (socket, data and state under $(DOCKER_STATE); bridge and
# address pools inside 198.18.0.0/15; published ports on 127.0.0.1 only); `make dockerd-stop`
# removes its containers and networks, stops it by pid and deletes the bridges and iptables
# rules it added. `make images` makes the base image locally (mmdebstrap + docker import, cached
# in ~/.cache/fulcrum/docker) and builds fulcrum/amphora and fulcrum/controlplane on it.
# Against another engine: DOCKER_HOST=... $(PY) deploy/images.py [--base-image debian:bookworm-slim].
DOCKER_STATE ?= $(STATE)/docker
DOCKER_SOCKET = $(abspath $(DOCKER_STATE))/docker.sock
COMPOSE = DOCKER_HOST=unix://$(DOCKER_SOCKET) FULCRUM_DOCKER_SOCKET=$(DOCKER_SOCKET) \
	docker-compose -p fulcrum -f deploy/compose.yaml
# The docker tests (tests/integration/docker, tests/e2e/test_compose.py) start the engine too.
SYSDEP_TOOLS += dockerd:docker.io docker-compose:docker-compose mmdebstrap:mmdebstrap zstd:zstd

.PHONY: dockerd dockerd-stop images test-images compose-up compose-down compose-logs

dockerd: venv sysdeps
	$(PY) -m deploy.local.dockerd start --state-dir $(DOCKER_STATE)

dockerd-stop: venv
	$(PY) -m deploy.local.dockerd stop --state-dir $(DOCKER_STATE)

images: dockerd
	DOCKER_HOST=unix://$(DOCKER_SOCKET) $(PY) deploy/images.py

# `make test` builds the docker tests' images first, in the engine those tests start (same state
# dir), then stops it: a first build on a fresh machine makes the Debian base with mmdebstrap
# (minutes), which no test's --timeout should have to cover.
test-images: venv sysdeps
	@$(PY) -m deploy.local.dockerd start --state-dir $(DOCKER_STATE)
	@DOCKER_HOST=unix://$(DOCKER_SOCKET) $(PY) deploy/images.py; status=$$?; \
	  $(PY) -m deploy.local.dockerd stop --state-dir $(DOCKER_STATE); exit $$status

# The stack of deploy/compose.yaml on the private engine; the API on https://127.0.0.1:9876,
# its deployment CA copied to $(STATE)/compose-ca.pem.
compose-up: images
	$(COMPOSE) up -d
	@url=https://127.0.0.1:$${FULCRUM_API_PORT:-9876}; ca=$(STATE)/compose-ca.pem; \
	mkdir -p $(STATE); \
	$(COMPOSE) exec -T api cat /var/lib/fulcrum/secrets/ca/ca.pem > $$ca \
	  || { echo "no deployment CA in the secrets volume; see: make compose-logs" >&2; exit 1; }; \
	probe="import ssl, sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2, context=ssl.create_default_context(cafile=sys.argv[2]))"; \
	for _ in $$(seq 240); do $(PY) -c "$$probe" $$url/ $$ca 2>/dev/null && break; sleep 0.5; done; \
	$(PY) -c "$$probe" $$url/ $$ca 2>/dev/null \
	  || { echo "the API did not answer; see: make compose-logs" >&2; exit 1; }; \
	echo "Fulcrum (compose) is up: $$url (trust $$ca: OS_CACERT, curl --cacert)"; \
	echo "VIP subnet public-subnet ($${FULCRUM_VIP_NET:-198.18.64}.0/24); backends go on the docker network fulcrum-vip"

compose-logs:
	$(COMPOSE) logs --tail=100

# Amphorae are the provisioner's containers, not compose's: removed first. Volumes are kept
# (add COMPOSE_DOWN_ARGS=-v to drop the database, the JetStream store and the secrets).
compose-down:
	@ids=$$(DOCKER_HOST=unix://$(DOCKER_SOCKET) docker ps -aq --filter label=fulcrum.deployment=fulcrum); \
	if [ -n "$$ids" ]; then DOCKER_HOST=unix://$(DOCKER_SOCKET) docker rm -f $$ids >/dev/null; fi
	$(COMPOSE) down --remove-orphans $(COMPOSE_DOWN_ARGS)
