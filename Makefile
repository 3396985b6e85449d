# Two commands on a fresh clone:
#   make demo   install, then run the pipeline end to end on DATASET_DIR
#   make test   install, then run the test suite
#
# DATASET_DIR defaults to ../shared/movie-posters when that folder exists.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP = $(VENV)/.installed-$(TF_BUILD)
TF_BUILD ?= cpu

DATASET_DIR ?= $(if $(wildcard ../shared/movie-posters/train.csv),../shared/movie-posters,)
RUN_DIR ?= runs/$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: setup demo test bench check-dataset clean

setup: $(STAMP)

$(STAMP): setup.py requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	# Exactly one TensorFlow build may be installed, so switching TF_BUILD removes the other.
	$(BIN)/pip uninstall --quiet --yes tensorflow tensorflow-cpu 2>/dev/null || true
	rm -f $(VENV)/.installed-*
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[$(TF_BUILD),dev,pretrained]"
	$(BIN)/python -m tfpipe.check_install
	touch $(STAMP)

check-dataset:
	@if [ -z "$(DATASET_DIR)" ] || [ ! -f "$(DATASET_DIR)/train.csv" ]; then \
	  echo "No train.csv in DATASET_DIR='$(DATASET_DIR)' (default: ../shared/movie-posters)."; \
	  echo "Get the public dataset with:"; \
	  echo "  git clone https://github.com/laxmimerit/Movies-Poster_Dataset"; \
	  echo "then run: make demo DATASET_DIR=/path/to/Movies-Poster_Dataset"; \
	  exit 2; \
	fi

demo: setup check-dataset
	$(BIN)/python -m trainer.demo --dataset_dir="$(DATASET_DIR)" --run_dir="$(RUN_DIR)"

test: setup
	DATASET_DIR="$(DATASET_DIR)" $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
