# Two commands for a fresh machine: `make run` (install + launch the suite) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
export GRADIO_ANALYTICS_ENABLED := False
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false

.PHONY: run test install install-dev lint bench model
DATA ?= ../shared/data/chest_xray

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(PY) -m apps.launch

test: install-dev
	$(PY) -m ruff check .
	$(PY) -m pytest

# CUDA check: the device-parametrised tests on CUDA and a short explainer benchmark; fails clearly without CUDA.
.PHONY: test-gpu
test-gpu: install-dev
	PY=$(PY) bash bench/gpu_check.sh

bench: install-dev
	$(PY) -m bench.explainers
	$(PY) -m bench.embeddings
	$(PY) -m bench.trust

# Reproduce the bundled weights: four generations of one recipe, each a born-again student of the one before
# (the same size, seeds 0, 2, 3, 4; about 42 + 54 + 55 + 54 min on 2 CPU cores), then fit the trust data on the new
# patients.
RECIPE = --data $(DATA)/train --size 192 --width 32 --epochs 26 --augment strong --ema 0.99 \
	--external $(DATA)/external --select external --threads 1
LINEAGE := build/lineage

$(LINEAGE)/generation1.safetensors: | $(VENV)/.installed
	mkdir -p $(@D)
	$(PY) -m core.train $(RECIPE) --seed 0 --out $@

$(LINEAGE)/generation2.safetensors: $(LINEAGE)/generation1.safetensors
	$(PY) -m core.train $(RECIPE) --seed 2 --teacher $< --out $@

$(LINEAGE)/generation3.safetensors: $(LINEAGE)/generation2.safetensors
	$(PY) -m core.train $(RECIPE) --seed 3 --teacher $< --out $@

model: $(LINEAGE)/generation3.safetensors
	$(PY) -m core.train $(RECIPE) --seed 4 --teacher $< --out models/cxr-resnet18.safetensors
	$(PY) -m core.calibrate --model models/cxr-resnet18.safetensors --train $(DATA)/train --data $(DATA)/external
