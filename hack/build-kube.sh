#!/usr/bin/env bash
# Builds Kubernetes components for kube2ra's tests from the Go module proxy and
# caches them outside the repository, keyed by version:
#   $KUBE2RA_CACHE/<component>-$KUBE_VERSION
# Usage: build-kube.sh [component...]   (default: kube-apiserver)
# Components: kube-apiserver kube-controller-manager kube-scheduler kube-proxy
# kubelet. Only missing ones are built, all in one `go build` so they share
# the compile. Prints each binary's path.
#
# k8s.io/kubernetes is not meant to be a dependency: its go.mod points every
# staging module (k8s.io/api, k8s.io/client-go, ...) at ./staging. We read
# that list from the module's own go.mod and replace each one with its
# published v0.x tag instead, so the list never goes stale.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
KNOWN="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver)
for c in "${components[@]}"; do
  case " $KNOWN " in *" $c "*) ;; *) echo "build-kube: unknown component '$c' (known: $KNOWN)" >&2; exit 2 ;; esac
done

missing() {
  local c out=()
  for c in "${components[@]}"; do [ -x "$CACHE_DIR/$c-$KUBE_VERSION" ] || out+=("$c"); done
  echo "${out[@]:-}"
}
print_paths() { local c; for c in "${components[@]}"; do echo "$CACHE_DIR/$c-$KUBE_VERSION"; done; }

todo=$(missing)
if [ -z "$todo" ]; then print_paths; exit 0; fi

# One build at a time per version: a second caller (another `make test`)
# waits for the first and then uses its binaries.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.kube-build-$KUBE_VERSION.lock"
if ! flock -n 9; then
  echo "build-kube: another build of $KUBE_VERSION is running; waiting for it" >&2
  flock 9
fi
todo=$(missing)
if [ -z "$todo" ]; then print_paths; exit 0; fi

export GONOSUMDB=k8s.io GOFLAGS=-mod=mod GOTOOLCHAIN=local
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

gomod_json=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") || {
  echo "build-kube: cannot download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy" >&2
  exit 1
}
upstream_mod=$(printf '%s' "$gomod_json" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')

# A blank import keeps every wanted main package in the module graph for
# `go mod tidy`; the binaries are the upstream cmd/ packages themselves.
{
  echo "// Package tools pins the Kubernetes commands kube2ra's tests build."
  echo "//go:build tools"
  echo
  echo "package tools"
  echo
  echo "import ("
  for c in $KNOWN; do echo "	_ \"k8s.io/kubernetes/cmd/$c/app\""; done
  echo ")"
} > tools.go

{
  echo "module kube2ra.local/kube"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$upstream_mod"
  echo ")"
} > go.mod

start=$(date +%s)
if ! go mod tidy >build.log 2>&1; then
  echo "build-kube: resolving modules for k8s.io/kubernetes@$KUBE_VERSION failed:" >&2; tail -n 100 build.log >&2; exit 1
fi
pkgs=()
for c in $todo; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
echo "build-kube: building $todo $KUBE_VERSION (kube-apiserver alone takes about 5-10 minutes on 2 cores; the others about a minute more; once per machine)" >&2
mkdir -p out
if ! go build -trimpath -o out/ \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$STAGING_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean" \
  "${pkgs[@]}" >build.log 2>&1; then
  echo "build-kube: go build of $todo $KUBE_VERSION failed:" >&2; tail -n 100 build.log >&2; exit 1
fi
for c in $todo; do mv "out/$c" "$CACHE_DIR/$c-$KUBE_VERSION"; done
echo "build-kube: built $todo $KUBE_VERSION in $(( $(date +%s) - start ))s" >&2
print_paths
