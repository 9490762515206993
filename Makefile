# kube2ra — see README.md. `make test` runs every tier on a fresh machine.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN := bin/kube2ra
# The chained CNI plugin (cni/plugin); the image carries it at /kube2ra-cni.
CNI_BIN := bin/kube2ra-cni
export KUBE2RA_CACHE ?= $(HOME)/.cache/kube2ra
export GOFLAGS ?= -buildvcs=false
TOOLS := $(KUBE2RA_CACHE)/bin
IMAGE ?= kube2ra:$(VERSION)

.PHONY: all build test test-deps test-unit test-integration e2e e2e-cluster bench soak soak-short demo lint chart-test controlplane image clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kube2ra
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(CNI_BIN) ./cmd/kube2ra-cni

# Every tier, installing what it needs first.
test: test-deps lint build test-unit test-integration chart-test e2e e2e-cluster soak-short

test-deps:
	@hack/install-test-deps.sh

# Seconds: no root, loopback only.
test-unit:
	$(GO) test -race -count=1 ./...

# Real kube-apiserver + etcd, real iptables in network namespaces (root).
# test/chart runs under chart-test, test/e2e under e2e.
test-integration:
	$(GO) test -race -count=1 -tags integration -timeout 20m $$($(GO) list -tags integration ./... | grep -v -e /test/chart -e /test/e2e)

e2e: build
	$(GO) test -count=1 -tags e2e -timeout 20m ./test/e2e/...

# One real node (root): containerd, kubelet, kube-proxy and the bridge CNI in a
# network namespace, kube-controller-manager and kube-scheduler, and the chart
# installed with helm from the image built from ./Dockerfile
# (hack/cluster-images.sh). Prints CLUSTER <name> <value> lines.
e2e-cluster:
	$(GO) test -count=1 -tags e2ecluster -timeout 30m -v ./test/cluster/ 2>&1 | grep --line-buffered -v -e '^=== RUN' -e '^=== PAUSE' -e '^=== CONT'; exit $${PIPESTATUS[0]}

# Benchmarks on the e2e harness (root). BENCH_QUICK=1: same figures in under
# 2 minutes; BENCH_OUT=file.json: a JSON report.
bench: build
	BENCH_QUICK=$(BENCH_QUICK) BENCH_OUT=$(BENCH_OUT) $(GO) run ./test/bench/cmd

# Mixed load from 32 pods while faults are injected; SOAK_SECONDS (default
# 300) split between the two flavours. Exits non-zero when an invariant breaks.
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) $(GO) run ./test/soak

# make test's soak: 60 s of load, about 5 minutes with both nodes' set-up.
soak-short:
	$(MAKE) soak SOAK_SECONDS=60

# KEEP=1 leaves it running; DEMO_FLAVOUR=ec2 for the STS flavour.
demo: test-deps build
	KEEP=$(KEEP) DEMO_FLAVOUR=$(DEMO_FLAVOUR) $(GO) run ./test/demo

chart-test:
	@hack/chart-test.sh

controlplane:
	$(GO) run ./test/controlplane/cmd

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) vet -tags e2e ./...
	$(GO) vet -tags e2ecluster ./...
	@if [ ! -x $(TOOLS)/staticcheck ]; then hack/install-test-deps.sh tools; fi
	$(TOOLS)/staticcheck ./...
	$(TOOLS)/staticcheck -tags integration,e2e ./...
	$(TOOLS)/staticcheck -tags e2ecluster ./test/cluster/

# The agent image from ./Dockerfile, with docker or else buildah (IMAGE=repo:tag).
image:
	@if command -v docker >/dev/null 2>&1; then \
	  docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
	  buildah bud --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) . ; \
	else echo "make image needs docker or buildah (apt-get install buildah)"; exit 1; fi

clean:
	rm -rf bin
