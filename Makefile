# Quick start (README): `make train` sets up .venv and trains the embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
# This machine type installs these CUDA 13.0 builds from local disk; override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# CUDA kernels compile wherever nvcc is found (they run only on a GPU); 9.0 = H100/H200.
# CUDA_HOME defaults to /usr/local/cuda only where it holds bin/nvcc (else setup.py looks for nvcc
# on PATH, and builds CPU-only without one).
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(wildcard /usr/local/cuda/bin/nvcc))
ifneq ($(strip $(CUDA_HOME)),)
export CUDA_HOME
endif
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= 2
# Optional extras for .venv: NVIDIA DALI (the 'dali' data backend; its tests run CPU-only without a
# GPU). `make setup EXTRA_PIP=` leaves it out (the DALI tests then skip, saying why).
EXTRA_PIP ?= nvidia-dali-cuda130
STAMP := $(VENV)/.classy_fast-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/cuda/*.cu csrc/include/*/*.h csrc/include/*/*/*.h csrc/include/*/*/*.cuh)
ARGS ?=

.PHONY: setup train test bench-cpu clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q $(TORCH_SPEC) numpy pyyaml tqdm ninja pytest pytest-benchmark expecttest
	$(if $(strip $(EXTRA_PIP)),$(VENV)/bin/pip install -q $(EXTRA_PIP))
	$(VENV)/bin/pip install -q --no-build-isolation --no-deps -e .
	$(VENV)/bin/python -m classy_fast.info
	touch $@

train: setup
	$(VENV)/bin/python -m classy_fast.train $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(ARGS)

# CPU smoke run of the throughput benchmark (README: on CPU use a small model at 32 px).
bench-cpu: setup
	$(VENV)/bin/python -m classy_fast.bench --model small_resnet --image-size 32 --batch-size 32 --num-classes 10 \
		--amp none --steps 5 --windows 3 --warmup 2 --device cpu $(ARGS)

clean:
	rm -rf build classy_fast/*.so classy_fast.egg-info $(STAMP)
