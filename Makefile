# `make test` and `make demo` set everything up on first use (see README).
PYTHON ?= python3.11
PYTHON_VERSION ?= 3.12
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dcdc-installed

.PHONY: install test demo compare params bench wheelhouse clean-venv

install: $(STAMP)

# Idempotent: re-runs only when the venv is missing or these files change.
$(STAMP): setup.py Makefile tools/install_detectron2.py $(wildcard projects/DCDC/dcdc/layers/csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23" wheel
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install "numpy<2" "setuptools<81" pycocotools opencv-python-headless \
		panopticapi-lite pytest pytest-xdist hypothesis \
		timm==1.0.31 grad-cam==1.5.7 onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2
	$(PY) -m pip install --no-build-isolation -e .
	touch $(STAMP)

# on both cores: each test runs one intra-op thread (tests/conftest.py)
test: install
	$(PY) -m pytest -q -n 2 tests

params: install
	$(PY) tools/param_table.py

bench: install
	$(PY) -m benchmarks.bench_aggregation
	$(PY) -m benchmarks.bench_layers
	$(PY) -m benchmarks.bench_models

demo: install
	# shapes data -> train_net.py (Panoptic FPN, DCDC-R26, CPU) -> evaluators -> pictures in output/quickstart
	$(PY) tools/run_demo.py

compare: install
	# each spatial operator x 5 paired seeds, detection + classification grids, from a git worktree
	# of one commit, resumable -> tables, paired differences, figures in output/compare/<task>
	$(PY) tools/compare_operators.py

# every file an offline CUDA PyTorch machine needs besides torch, for Python $(PYTHON_VERSION)
# (tools/wheelhouse.py; needs only pip and PyPI, not the venv)
wheelhouse:
	$(PYTHON) tools/wheelhouse.py download --python-version $(PYTHON_VERSION) --dest wheelhouse

clean-venv:
	rm -rf $(VENV)
