# The two commands a newcomer needs: `make serve` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3000
SHARED ?= ../shared/data
LABELS ?= $(wildcard $(SHARED)/inat21/inat21_class_index.json)
HEAD ?= $(wildcard $(SHARED)/aesthetic/sa_0_4_vit_b_16_linear.pth)
# DEV=1 registers tiny random-initialised models instead of downloading the real weights.
ifeq ($(DEV),1)
SAVE_ARGS := --dev $(if $(LABELS),--labels $(LABELS))
endif
SAVE_ARGS += $(if $(HEAD),--head $(HEAD))

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUILD_ID ?= $(shell git describe --always --dirty --abbrev=8 2>/dev/null || date -u +%Y%m%d%H%M%S)
BENTO_TAG = vision-serve:$(VERSION)-$(BUILD_ID)
RUNNER_GPUS ?= 0.25

.PHONY: install models serve test bento clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

models: install  ## register every model in the BentoML store if missing
	$(PY) scripts/save_models.py all $(SAVE_ARGS)

serve: install  ## register models if missing, then serve on http://localhost:$(PORT)
	settings=$$($(PY) scripts/save_models.py all $(SAVE_ARGS)) || \
	  { echo "Hint: 'make serve DEV=1' serves tiny dev models without the hub." >&2; exit 2; } && \
	env $$settings $(VENV)/bin/bentoml serve service:Gateway --port $(PORT)

bento: install  ## build the versioned Bento (models registered if missing; DEV=1 for dev models)
	settings=$$($(PY) scripts/save_models.py all $(SAVE_ARGS)) && \
	env $$settings RUNNER_GPUS=$(RUNNER_GPUS) $(VENV)/bin/bentoml build --version $(VERSION)-$(BUILD_ID) && \
	echo "Built $(BENTO_TAG)"

test: install
	$(PY) -m pytest -ra tests

clean:
	rm -rf $(VENV) .pytest_cache
