#!/usr/bin/env bash
# Builds kube-apiserver for the test control plane from the Go module proxy and
# caches it outside the repository, keyed by version. Prints the binary's path.
#
# k8s.io/kubernetes is not meant to be a dependency: its go.mod points every
# staging module (k8s.io/api, k8s.io/client-go, ...) at ./staging. We read
# that list from the module's own go.mod and replace each one with its
# published v0.x tag instead, so the list never goes stale.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
OUT="$CACHE_DIR/kube-apiserver-$KUBE_VERSION"

if [ -x "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

# One build at a time per version: a second caller (another `make test`)
# waits for the first and then uses its binary.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.kube-apiserver-$KUBE_VERSION.lock"
if ! flock -n 9; then
  echo "build-kube-apiserver: another build of $KUBE_VERSION is running; waiting for it" >&2
  flock 9
fi
if [ -x "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

export GONOSUMDB=k8s.io GOFLAGS=-mod=mod GOTOOLCHAIN=local
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

gomod_json=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION") || {
  echo "build-kube-apiserver: cannot download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy" >&2
  exit 1
}
upstream_mod=$(printf '%s' "$gomod_json" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')

cat > main.go <<'GO'
// Command kube-apiserver is the upstream API server, built for kube2ra's tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
GO

{
  echo "module kube2ra.local/kube-apiserver"
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
  echo "build-kube-apiserver: resolving modules for k8s.io/kubernetes@$KUBE_VERSION failed:" >&2; tail -n 100 build.log >&2; exit 1
fi
if ! go build -trimpath -o "$OUT.tmp" \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$STAGING_VERSION" | cut -d. -f2) -X k8s.io/component-base/version.gitTreeState=clean" \
  . >build.log 2>&1; then
  echo "build-kube-apiserver: go build of kube-apiserver $KUBE_VERSION failed:" >&2; tail -n 100 build.log >&2; exit 1
fi
mv "$OUT.tmp" "$OUT"
echo "build-kube-apiserver: built $KUBE_VERSION in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
