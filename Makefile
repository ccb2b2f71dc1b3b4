# edge-ner: make all | make test | make teacher | make distill | make quantize | make report
# (QUICK=1: a quick slice)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(or $(EDGE_NER_DATA_DIR),../shared/data)
DATASET ?= conll2003
PRESET ?=
QUICK ?=
# A dataset given as a path names its run by its folder: runs/<name>, never the path itself.
RUN ?= $(notdir $(abspath $(DATASET)))$(if $(QUICK),-quick,)

STAGE_ARGS := $(if $(PRESET),--preset $(PRESET),) $(if $(QUICK),--quick,) \
	run=$(RUN) dataset=$(DATASET) data_dir=$(DATA_DIR) $(ARGS)

.PHONY: all install teacher distill quantize report test lint clean

all: teacher distill quantize report

# The stamp is rebuilt when pyproject.toml changes, so a new dependency installs itself.
# Everything a CPU box can run (train, quantize, report) and the test tools; an edge box
# needs only `pip install edge-ner`.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed

teacher: install
	$(PY) -m teacher $(STAGE_ARGS)

distill: install
	$(PY) -m distill $(STAGE_ARGS)

quantize: install
	$(PY) -m quantize $(if $(QUICK),--quick,) run=$(RUN) data_dir=$(DATA_DIR) $(ARGS)

report: install
	$(PY) -m bench.report $(if $(QUICK),--quick,) run=$(RUN) data_dir=$(DATA_DIR) $(ARGS)

test: install
	EDGE_NER_DATA_DIR=$(abspath $(DATA_DIR)) HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs/$(RUN)
