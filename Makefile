# Ambient mesh: build, test, demo. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Rust target directory lives outside the clone so a machine keeps it warm between runs.
CACHE_DIR ?= /var/cache/ambient-mesh
export CARGO_TARGET_DIR ?= $(shell if mkdir -p $(CACHE_DIR)/target 2>/dev/null && [ -w $(CACHE_DIR)/target ]; then echo $(CACHE_DIR)/target; else echo $(CURDIR)/target; fi)
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
BIN_DIR := $(CARGO_TARGET_DIR)/debug

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## Install what the build and tests need (Debian packages, Rust components)
	@scripts/install-deps.sh
	@scripts/disk-guard.sh "$(CARGO_TARGET_DIR)"

.PHONY: build
build: deps ## Build every binary
	$(CARGO) build --workspace --bins

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: deps ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: deps lint charts-test ## Everything CI runs: lint, chart checks, then every test (root for the netns tiers)
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

.PHONY: charts-test
charts-test: deps ## helm lint and template of every chart (builds the pinned helm once, cached)
	e2e/cluster/build.sh helm
	HELM=$$(e2e/cluster/build.sh --print-env | sed -n 's/^HELM_BIN_DIR=//p')/helm charts/test.sh

.PHONY: demo
demo: deps ## The main job: run the local ambient mesh demo (root)
	$(CARGO) build --workspace --bins
	MESH_BIN_DIR=$(BIN_DIR) scripts/demo.sh

.PHONY: bench
bench: deps ## Performance benchmark, mesh vs no mesh, in network namespaces (root): bench/results, README
	$(CARGO) build --release --bins -p istiod -p ztunnel -p cni -p e2e
	@no_wp=(); \
	if ! $(CARGO) build --release --bins -p waypoint; then \
	  no_wp=(--no-waypoint "the waypoint crate does not build"); \
	fi; \
	eval "$$(e2e/cluster/build.sh --print-env)"; \
	[[ -x $$FORTIO_BIN_DIR/fortio ]] || e2e/cluster/build.sh fortio; \
	$(CARGO_TARGET_DIR)/release/mesh-bench run --bin-dir $(CARGO_TARGET_DIR)/release \
	  --fortio "$$FORTIO_BIN_DIR/fortio" --out bench/results --readme README.md \
	  "$${no_wp[@]}" $(BENCH_ARGS)

.PHONY: bench-micro
bench-micro: deps ## criterion micro-benchmarks
	$(CARGO) bench --workspace

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean

.PHONY: images
images: deps ## Build the container images as OCI archives (no Docker); imported if the local cluster is up
	$(CARGO) build --workspace --bins
	MESH_BIN_DIR=$(BIN_DIR) e2e/cluster/images.sh

.PHONY: cluster-up
cluster-up: deps ## Start the local single-node Kubernetes cluster (root; e2e/cluster/up.sh)
	e2e/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove everything it made (e2e/cluster/down.sh)
	e2e/cluster/down.sh

.PHONY: e2e
e2e: deps ## Kubernetes e2e on the local cluster: build, images, cluster up, suite, cluster down (root)
	e2e/run-k8s.sh local

.PHONY: e2e-kind
e2e-kind: ## Kubernetes e2e on kind (1 control plane, 2 workers): docker build, kind load, suite, kind delete
	e2e/run-k8s.sh kind
