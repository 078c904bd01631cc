# One-command entry points for a fresh clone (needs only python3 >= 3.10).
# torch is installed first, pinned, so pip takes the CPU wheel and not a CUDA build.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EPOCHS ?= 300
FINN_VENV ?= .venv-finn

.PHONY: demo test test-slow test-finn lint venv browser finn-env bench docs-screenshot clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Main job: the paper's SYN experiment (tanh, 8-bit), short, then its figures.
demo: venv
	$(VENV)/bin/ib-brevitas train --dataset syn --activation tanh --bits 8 \
	    --epochs $(EPOCHS) --mi-every 5 --seed 0 --run-dir runs/demo-tanh --overwrite
	$(VENV)/bin/ib-brevitas plot runs/demo-tanh -o runs/demo-tanh/information_plane.png
	@echo "Look at it live: $(VENV)/bin/tensorboard --logdir runs  (tab: INFORMATION PLANE)"

# Debian chromium for the browser tests (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	    else echo "browser tests need Debian chromium: sudo apt-get install -y chromium"; fi; }

# Fashion-MNIST at full size (70,000 images) from Debian: /usr/share/datasets/fashion-mnist.
.PHONY: fashion-mnist
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	    else sudo apt-get install -y dataset-fashion-mnist; fi; }
	@ls /usr/share/datasets/fashion-mnist

finn-env: venv
	$(VENV)/bin/ib-brevitas finn-setup $(FINN_VENV)

test: venv browser finn-env
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

test-finn: venv finn-env
	$(PY) -m pytest -q -m finn tests/test_export_finn.py

test-slow: venv browser
	$(PY) -m pytest -q -m slow

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache
