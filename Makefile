# edge-ner: make all | make test | make pretrain | make teacher | make distill | make quantize | make report
# (QUICK=1: a quick slice) | make gpu-check (on a CUDA machine) | make gpu-pack
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

.PHONY: all install pretrain pretrain-if-needed teacher distill quantize report test lint clean \
	gpu-check gpu-pack

# Pretraining runs only where the teacher preset starts from the pretrained backbone
# (PRESET=chinese: the offline backbone cannot read Chinese); elsewhere it is skipped.
all: pretrain-if-needed teacher distill quantize report

# The stamp is rebuilt when pyproject.toml changes, so a new dependency installs itself.
# Everything a CPU box can run (train, quantize, report) and the test tools; an edge box
# needs only `pip install edge-ner`.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed

pretrain: install
	$(PY) -m pretrain $(STAGE_ARGS)

pretrain-if-needed: install
	$(PY) -m pretrain --if-the-teacher-needs-it $(STAGE_ARGS)

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

# The quick pipeline on the GPU, each GPU row checked against its CPU FP32 counterpart;
# without CUDA, one line and exit 0. It runs on the machine's own Python where this
# checkout has no venv (a GPU image with PyTorch), with the wheels `make gpu-pack` packed.
GPU_PACK := .gpu
GPU_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	@if [ -d $(GPU_PACK)/wheels ] && [ ! -d $(GPU_PACK)/site ]; then \
		$(GPU_PY) -m pip install --quiet --no-index --no-deps --no-compile \
			--target $(GPU_PACK)/site $(GPU_PACK)/wheels/*; fi
	PYTHONPATH=$(abspath $(GPU_PACK))/site HF_HUB_OFFLINE=1 $(GPU_PY) -m bench.gpu_check $(ARGS)

# Here, with network: what a GPU machine without it needs (FP16 pretrained weights, the
# dataset, pure-Python wheels), in $(GPU_PACK)/ (ignored by git, ~50 MB).
gpu-pack: install
	$(PY) -m bench.gpu_check --pack $(GPU_PACK) data_dir=$(DATA_DIR)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs/$(RUN)
