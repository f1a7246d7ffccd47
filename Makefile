# The two commands a newcomer needs: `make serve` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 3000
SHARED ?= $(or $(SHARED_DATA_DIR),../shared/data)
LABELS ?= $(wildcard $(SHARED)/inat21/inat21_class_index.json)
HEAD ?= $(wildcard $(SHARED)/aesthetic/sa_0_4_vit_b_16_linear.pth)
TAXONOMY ?= $(wildcard $(SHARED)/inat21/inat21_taxonomy.json)
COMMON_NAMES ?= $(wildcard $(SHARED)/inat21/inat21_common_names_birder.json)
# DEV=1 registers tiny random-initialised models instead of downloading the real weights: offline, with the
# real class names, taxonomy and LAION head where they are found, else numbered dev classes, a dev taxonomy and
# a dev head (a taxonomy only fits the real class names).
ifeq ($(DEV),1)
SAVE_ARGS := --dev $(if $(LABELS),--labels $(LABELS),$(eval TAXONOMY :=)$(eval COMMON_NAMES :=))
else
SAVE_HINT := 'make serve DEV=1' serves tiny dev models, offline.
endif
SAVE_ARGS += $(if $(HEAD),--head $(HEAD))
SAVE_ARGS += $(if $(TAXONOMY),--taxonomy $(TAXONOMY)) $(if $(COMMON_NAMES),--common-names $(COMMON_NAMES))

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BUILD_ID ?= $(shell git describe --always --dirty --abbrev=8 2>/dev/null || date -u +%Y%m%d%H%M%S)
BENTO_TAG = vision-serve:$(VERSION)-$(BUILD_ID)
# Each runner's share of one GPU in a built Bento: 1 / number of runners (catalog.py).
RUNNER_GPUS ?= $(shell python3 -c "import catalog; print(catalog.gpu_share())")

.PHONY: install models serve test bento bench bench-gpu clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,bulk,openvino]"
	touch $@

install: $(VENV)/.installed

models: install  ## register every model in the BentoML store if missing
	$(PY) scripts/save_models.py all $(SAVE_ARGS)

serve: install  ## register models if missing, then serve on http://localhost:$(PORT)
	settings=$$($(PY) scripts/save_models.py all $(SAVE_ARGS)) || \
	  { $(if $(SAVE_HINT),echo "Hint: $(SAVE_HINT)" >&2;) exit 2; } && \
	env $$settings $(VENV)/bin/bentoml serve service:Gateway --port $(PORT)

bento: install  ## build the versioned Bento (models registered if missing; DEV=1 for dev models)
	settings=$$($(PY) scripts/save_models.py all $(SAVE_ARGS)) && \
	env $$settings RUNNER_GPUS=$(RUNNER_GPUS) $(VENV)/bin/bentoml build --version $(VERSION)-$(BUILD_ID) && \
	echo "Built $(BENTO_TAG)"

bench: install  ## benchmark vs the naive design and the ceiling with dev models (CPU figures)
	settings=$$($(PY) scripts/save_models.py all --dev $(if $(LABELS),--labels $(LABELS)) $(if $(HEAD),--head $(HEAD))) && \
	env $$settings $(PY) scripts/benchmark.py --serve --label "dev models, $$(nproc)-core CPU" --out docs/benchmarks/cpu-dev

bench-gpu: install  ## the same on a GPU with full-size random-weight models (EVA02-L/14@336, CLIP B/16, L/14, B/32)
	settings=$$($(PY) scripts/save_models.py all --dev --full-size $(if $(HEAD),--head $(HEAD))) && \
	env $$settings GATEWAY_WORKERS=$$(nproc) $(PY) scripts/benchmark.py --serve --ceiling-batches 1,32,64,128,256 \
	  --label "full-size random weights, $$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)$(if $(TORCH_COMPILE), TORCH_COMPILE=$(TORCH_COMPILE))" \
	  --out docs/benchmarks/gpu$(if $(TORCH_COMPILE),-compile-$(TORCH_COMPILE))

test: install
	$(PY) -m pytest -ra tests

clean:
	rm -rf $(VENV) .pytest_cache
