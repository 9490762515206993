#!/usr/bin/env bash
# What `make chart-test` runs: lint the kube2ra chart with every value set, then
# the chart's Go tests (golden files, schema errors, security invariants, and
# server-side dry-run plus real RBAC checks against the test control plane, and
# the alerting rules rendered from the chart through `promtool check rules` and
# `promtool test rules`, which need Debian's prometheus package:
# hack/install-test-deps.sh prometheus), and the chart packaged by
# hack/release.sh, pushed to a real OCI registry (Debian's docker-registry:
# hack/install-test-deps.sh registry), installed from oci:// and upgraded.
#
# helm is built from the Go module proxy, pinned, into the kube2ra cache
# (about 2.5 minutes the first time); test/chart/render.go pins the same version.
# The control plane needs etcd and kube-apiserver (hack/install-test-deps.sh).
set -euo pipefail

HELM_VERSION=v3.22.0
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
HELM="${KUBE2RA_HELM:-$CACHE_DIR/bin/helm}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/charts/kube2ra"

if [ ! -x "$HELM" ]; then
  echo "chart-test: installing helm $HELM_VERSION into $(dirname "$HELM") from the Go module proxy" >&2
  mkdir -p "$(dirname "$HELM")"
  tmp="$(mktemp -d "$(dirname "$HELM")/.helm-install-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && GOBIN="$tmp" GOFLAGS=-mod=mod go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv "$tmp/helm" "$HELM"
fi

# A user's helm configuration must not change the result.
export HELM_CONFIG_HOME="${TMPDIR:-/tmp}/kube2ra-helm/config" HELM_CACHE_HOME="${TMPDIR:-/tmp}/kube2ra-helm/cache" HELM_DATA_HOME="${TMPDIR:-/tmp}/kube2ra-helm/data"

start=$(date +%s)
"$HELM" lint --strict "$chart" --namespace kube-system
for values in "$chart"/ci/*-values.yaml; do
  "$HELM" lint --strict "$chart" --namespace kube-system --values "$values"
done
echo "chart-test: helm lint clean for the defaults and $(ls "$chart"/ci/*-values.yaml | wc -l) value sets in $(( $(date +%s) - start ))s" >&2

cd "$root"
go test -race -count=1 -tags integration ./test/chart/... "$@"
