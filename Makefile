# Set-up and main commands. Each target creates .venv with the pinned torch first.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0

# The demo: mine + finetune ResNet-20 on CIFAR-10 with `gemminer mine`'s defaults (the
# paper's main setting, see `gemminer mine --help`), resolved by gemminer itself.
# Optional: EPOCHS=N (--epochs: the mining budget; finetuning uses as many, as in the
# paper's Table 15), DENSITY=D (--density: the fraction of weights kept).
EPOCHS   ?=
DENSITY  ?=
DATA_DIR ?= .data/cifar10
SHARED_CIFAR := ../shared/datasets/cifar10-jpeg.tar.gz
# Optional: PRECISION=auto|bf16|fp32 (--precision; gemminer's default is auto),
# EVAL_EVERY=N (--eval-every: the test set every N epochs and after the last).
PRECISION  ?=
EVAL_EVERY ?=

.PHONY: install test test-torch demo data lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q

# Offline machines: unpack the image-folder copy of CIFAR-10 if it sits beside the repo.
# Otherwise `gemminer` downloads the official release into DATA_DIR.
data:
	@if [ ! -d "$(DATA_DIR)/train" ] && [ -f "$(SHARED_CIFAR)" ]; then \
		echo "unpacking $(SHARED_CIFAR) into $(DATA_DIR) (60,000 images, about a minute)"; \
		mkdir -p "$(DATA_DIR)" && tar xzf "$(SHARED_CIFAR)" -C "$(DATA_DIR)" && \
		echo "CIFAR-10 ready in $(DATA_DIR)"; \
	fi

demo: install data
	$(BIN)/gemminer mine --model resnet20 --dataset cifar10 --data-dir "$(DATA_DIR)" \
		$(if $(DENSITY),--density $(DENSITY)) $(if $(EPOCHS),--epochs $(EPOCHS)) --finetune \
		$(if $(PRECISION),--precision $(PRECISION)) $(if $(EVAL_EVERY),--eval-every $(EVAL_EVERY))

# The suite on another PyTorch release in a venv of its own, e.g. the GPU machines' 2.11:
#   make test-torch TORCH_VERSION=2.11.0
# (pip takes PyPI's build of that release: on Linux a CUDA build of several GB, which runs on
# the CPU too.) A release below pyproject.toml's floor needs the floor lowered first;
# older releases may need NumPy < 2: TORCH_EXTRA='numpy<2'.
TORCH_VERSION ?= 2.11.0
TORCH_EXTRA   ?=
ALT_VENV      := .venv-torch$(TORCH_VERSION)

test-torch:
	test -x $(ALT_VENV)/bin/python || $(PYTHON) -m venv $(ALT_VENV)
	$(ALT_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION) $(TORCH_EXTRA) -e ".[dev]"
	$(ALT_VENV)/bin/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
