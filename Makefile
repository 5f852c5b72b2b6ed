# meshward — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO            ?= go
CACHE         := $(CURDIR)/.cache
BIN           := $(CURDIR)/bin
VAULT_VERSION := 1.13.0
VAULT_BIN     := $(CACHE)/vault-$(VAULT_VERSION)
VAULT_SRC     := secrets/vaulttest/vaultbin
KUBE_VERSION  := 1.37.2
ETCD_VERSION  := 3.7.0
KUBE_SRC      := cmd/meshward/internal/kube/kubetest/kubebin
KUBE_APISERVER_BIN := $(CACHE)/kube-apiserver-$(KUBE_VERSION)
ETCD_BIN      := $(CACHE)/etcd-$(ETCD_VERSION)
OTELCOL_VERSION := 0.161.0
OTELCOL_SRC   := extauthz/audit/otelcoltest/otelcolbin
OTELCOL_BIN   := $(CACHE)/otelcol-$(OTELCOL_VERSION)
CONTROLLER_GEN := sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
GOLANGCI_VERSION := v2.15.0
GOLANGCI      := $(CACHE)/bin/golangci-lint-$(GOLANGCI_VERSION)
GHZ_VERSION   := v0.93.0
GHZ           := $(CACHE)/bin/ghz-$(GHZ_VERSION)
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS       := -X main.version=$(VERSION)
FUZZTIME      ?= 30s
# vtprotobuf: go-control-plane's generated marshallers encode the
# ext_authz responses (about 3x faster than protobuf-go; docs/performance.md).
# A plain `go build` works too, with protobuf-go's encoding.
TAGS          ?= vtprotobuf
GOTAGS        := -tags '$(TAGS)'

export MESHWARD_VAULT_BIN := $(VAULT_BIN)
export MESHWARD_KUBE_APISERVER_BIN := $(KUBE_APISERVER_BIN)
export MESHWARD_ETCD_BIN := $(ETCD_BIN)
export MESHWARD_OTELCOL_BIN := $(OTELCOL_BIN)

.PHONY: help
help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: build
build: ## build bin/meshward
	$(GO) build $(GOTAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/meshward ./cmd/meshward

.PHONY: run
run: build ## serve the embedded quickstart (local CA, no Vault needed); Ctrl-C stops it
	exec $(BIN)/meshward serve --log-format text

.PHONY: test
test: vault kube otelcol ## run every test with the race detector, Vault, Kubernetes and OpenTelemetry Collector integration tests included
	$(GO) vet $(GOTAGS) ./...
	$(GO) test $(GOTAGS) -race -timeout 20m ./...

.PHONY: test-short
test-short: ## run the unit tests only (no Vault, no kube-apiserver, no collector)
	$(GO) test $(GOTAGS) -short ./...

.PHONY: bench
bench: vault ghz-load ## run the benchmarks and the ghz load run (figures and targets: docs/performance.md)
	$(GO) test $(GOTAGS) -run '^$$' -bench . -benchmem -count 1 ./...

.PHONY: bench-kube
bench-kube: kube ## the Kubernetes-mode benchmarks on a real API server (AGENTS=1000 MeshAgents x PODS=5 simulated Envoys; tens of minutes)
	MESHWARD_BENCH_KUBE_AGENTS=$(or $(AGENTS),1000) MESHWARD_BENCH_KUBE_PODS=$(or $(PODS),5) \
	  $(GO) test $(GOTAGS) -run '^$$' -bench '^BenchmarkKubernetes' -benchtime $(or $(BENCHTIME),20x) -timeout 90m ./cmd/meshward

.PHONY: bench-quarantine
bench-quarantine: ## quarantine end to end: command -> Checks denied, peers' Envoys ACKed, its Envoy withdrawn (NODES=5000 simulated Envoys)
	MESHWARD_BENCH_QUARANTINE_NODES=$(or $(NODES),5000) \
	  $(GO) test $(GOTAGS) -run '^$$' -bench '^BenchmarkQuarantineEndToEnd' -benchtime $(or $(BENCHTIME),20x) -timeout 60m ./cmd/meshward

.PHONY: ghz-load
ghz-load: build $(GHZ) ## ghz (c=8, one connection) against serve and a no-op server, alternating; prints the ratios
	$(GO) run ./extauthz/internal/ghzload -meshward $(BIN)/meshward -ghz $(GHZ) $(GHZFLAGS)

$(GHZ):
	@mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	mv $(CACHE)/bin/ghz $(GHZ)

.PHONY: loadtest
loadtest: ## xDS load: N simulated Envoys (N=5000; MTLS=1 for mutual TLS) converge, then one change
	$(GO) run $(GOTAGS) ./xds/internal/loadtest -n $(or $(N),5000) $(if $(MTLS),-mtls)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test $(GOTAGS) -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test $(GOTAGS) -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

.PHONY: vault
vault: $(VAULT_BIN) ## build the Vault dev server used by the integration tests (cached)

$(VAULT_BIN): $(VAULT_SRC)/go.mod $(VAULT_SRC)/go.sum $(VAULT_SRC)/main.go
	@mkdir -p $(CACHE)
	@echo "building Vault $(VAULT_VERSION) for the integration tests (about 5 minutes the first time)"
	cd $(VAULT_SRC) && $(GO) build -o $(VAULT_BIN).tmp . && mv $(VAULT_BIN).tmp $(VAULT_BIN)

.PHONY: kube
kube: $(KUBE_APISERVER_BIN) $(ETCD_BIN) ## build kube-apiserver and etcd for the Kubernetes integration tests (cached)

$(KUBE_APISERVER_BIN): $(KUBE_SRC)/go.mod $(KUBE_SRC)/go.sum $(KUBE_SRC)/kube-apiserver/main.go
	@mkdir -p $(CACHE)
	@echo "building kube-apiserver $(KUBE_VERSION) for the integration tests (about 20 minutes the first time on 2 cores)"
	cd $(KUBE_SRC) && $(GO) build -o $@.tmp ./kube-apiserver && mv $@.tmp $@

$(ETCD_BIN): $(KUBE_SRC)/go.mod $(KUBE_SRC)/go.sum $(KUBE_SRC)/etcd/main.go
	@mkdir -p $(CACHE)
	cd $(KUBE_SRC) && $(GO) build -o $@.tmp ./etcd && mv $@.tmp $@

.PHONY: otelcol
otelcol: $(OTELCOL_BIN) ## build the OpenTelemetry Collector (OTLP receiver, file exporter) used by the audit export tests (cached)

$(OTELCOL_BIN): $(OTELCOL_SRC)/go.mod $(OTELCOL_SRC)/go.sum $(OTELCOL_SRC)/main.go
	@mkdir -p $(CACHE)
	@echo "building the OpenTelemetry Collector $(OTELCOL_VERSION) for the integration tests (about 2 minutes the first time on 2 cores)"
	cd $(OTELCOL_SRC) && $(GO) build -o $@.tmp . && mv $@.tmp $@

.PHONY: crds
crds: ## regenerate the CRDs (examples/kubernetes/crds) and deepcopy code from the Go types with controller-gen (pinned)
	$(GO) run $(CONTROLLER_GEN) object paths=./cmd/meshward/internal/kube/api/... \
	  crd:crdVersions=v1 output:crd:artifacts:config=examples/kubernetes/crds

.PHONY: chromium
chromium: ## install Debian's chromium for the /ui browser test when it is missing (apt-get, about a minute)
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	echo "installing Debian's chromium for the /ui browser test"; \
	{ $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed here: TestUIBrowser will skip"

.PHONY: test-ui
test-ui: chromium ## the /ui browser test in headless Chromium (installed when missing); screenshot in .cache/test-ui
	@mkdir -p $(CACHE)/test-ui
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then require=1; else require=0; fi; \
	MESHWARD_REQUIRE_BROWSER=$$require $(GO) test $(GOTAGS) -count 1 -run '^TestUIBrowser$$' -v \
	  -artifacts -outputdir $(CACHE)/test-ui ./cmd/meshward

.PHONY: lint
lint: $(GOLANGCI) ## go vet and golangci-lint (pinned)
	$(GO) vet $(GOTAGS) ./...
	$(GOLANGCI) run --build-tags '$(TAGS)' ./...

$(GOLANGCI):
	@mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(CACHE)/bin/golangci-lint $(GOLANGCI)

.PHONY: tidy-check
tidy-check: ## fail when go.mod/go.sum are not tidy
	$(GO) mod tidy -diff
	cd $(VAULT_SRC) && $(GO) mod tidy -diff
	cd $(KUBE_SRC) && $(GO) mod tidy -diff
	cd $(OTELCOL_SRC) && $(GO) mod tidy -diff

.PHONY: clean
clean: ## remove build outputs (keeps the Vault cache)
	rm -rf $(BIN)
