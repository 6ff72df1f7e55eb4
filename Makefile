# Two entry points do all the set-up on a fresh machine: `make demo` and `make test`.
# The virtualenv is (re)built whenever the requirement files change.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean-demo

$(STAMP): envs/requirements.txt envs/requirements-dev.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r envs/requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

## The main job end to end on generated demo data, on this machine's CPU.
demo: $(STAMP)
	$(BIN)/segtrain make-demo-data
	scripts/submit configs/demo.yaml --local
	run=$$(ls -dt runs/demo-*/ | head -n 1) && \
	$(BIN)/segtrain eval $$run && \
	$(BIN)/segtrain export $$run && \
	$(BIN)/segtrain predict $$run/export/model.onnx data/demo/scenes/$$(head -n 1 data/demo/filelists/test.csv) \
	    --out $${run}predictions --prob

## The test suite: the fast tests here (a few minutes on 2 cores); everything, the slow
## end-to-end jobs included, where CI=true (as CI sets it) or with `make test CI=1`.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 $(if $(CI),,-m "not slow")

clean-demo:
	rm -rf data/demo runs/demo*
