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

.PHONY: all build test test-deps demo-deps test-unit test-integration e2e e2e-cluster bench bench-smoke soak soak-short demo lint chart-test rules-test controlplane image release release-smoke clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kube2ra
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(CNI_BIN) ./cmd/kube2ra-cni

# Every tier, installing what it needs first.
test: test-deps lint build test-unit test-integration chart-test e2e e2e-cluster release-smoke soak-short bench-smoke

test-deps:
	@hack/install-test-deps.sh

demo-deps:
	@hack/install-test-deps.sh demo

# Seconds: no root, loopback only.
test-unit:
	$(GO) test -race -count=1 ./...
	# The Go benchmarks once each, so none breaks unseen (figures: make bench).
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...

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

# make test's bench: the quick run as a smoke test, about 2 minutes. It prints
# the figures and checks no threshold (the machine running the tests may be
# busy), but fails when a phase fails or a figure is not measured.
bench-smoke:
	$(MAKE) bench BENCH_QUICK=1

# Mixed load from 32 pods while faults are injected; SOAK_SECONDS (default
# 300) split between the two flavours. Exits non-zero when an invariant breaks.
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) $(GO) run ./test/soak

# make test's soak: 60 s of load, about 5 minutes with both nodes' set-up.
soak-short:
	$(MAKE) soak SOAK_SECONDS=60

# KEEP=1 leaves it running; DEMO_FLAVOUR=ec2 for the STS flavour. Installs
# only what the demo uses (a first look costs the kube-apiserver build, not
# the test tiers' dependencies).
demo: demo-deps build
	KEEP=$(KEEP) DEMO_FLAVOUR=$(DEMO_FLAVOUR) $(GO) run ./test/demo

# helm lint, goldens, schema, dry-run, and the alerting rules through promtool.
chart-test:
	@hack/chart-test.sh

# Only the chart's alerts and dashboard: promtool check/test rules on the
# rendered PrometheusRule (chart-test runs these too; make e2e evaluates
# them against a real Prometheus).
rules-test:
	$(GO) test -count=1 -tags integration ./test/chart/ -run 'TestAlert|TestEveryAlert|TestDashboard'

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

# Release artefacts in dist/VERSION (or RELEASE_DIR): the agent image for
# linux/amd64 and linux/arm64 as one OCI index (PLATFORMS= to choose), the
# agent binaries, the packaged chart (version and appVersion VERSION) and
# SHA256SUMS (README, "Publishing a release"); each image and binary is run
# once (arm64 under qemu-user-static) to check it starts. Root. VERSION is
# SemVer: make release VERSION=1.2.3
release:
	@hack/install-test-deps.sh release tools
	@hack/release.sh "$(VERSION)" $(RELEASE_DIR)

# make test's release: every artefact, outside the repository.
release-smoke:
	$(MAKE) release VERSION=0.0.0-smoke RELEASE_DIR=$(KUBE2RA_CACHE)/release-smoke

clean:
	rm -rf bin dist
