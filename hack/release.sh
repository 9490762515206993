#!/usr/bin/env bash
# What `make release VERSION=…` runs: the release artefacts a user publishes
# to their own registry, in dist/<version>/:
#   kube2ra-<version>-linux-amd64, kube2ra-<version>-linux-arm64
#                     the agent binary, cross-compiled (CGO_ENABLED=0, static)
#   kube2ra-<version>.tgz
#                     the chart (`helm package`), version and appVersion both
#                     <version>, so image.tag defaults to the same tag
#   SHA256SUMS        sha256sum of each of the above
#
# Each binary must start and report its version and architecture
# (`kube2ra version`); the arm64 one runs under Debian's qemu-user-static
# (qemu-aarch64-static, no binfmt registration needed).
#
#   release.sh VERSION [OUTDIR]        everything above
#   release.sh chart VERSION OUTDIR    only the packaged chart (test/chart uses it)
#
# VERSION is SemVer 2 (1.2.3, 1.2.3-rc.1; a leading v is dropped), which Helm
# requires of a chart version and OCI tags accept. The version is given in
# this one place: Chart.yaml's version and appVersion in the source tree stay
# the development values and are overridden only in the package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
HELM="${KUBE2RA_HELM:-$CACHE_DIR/bin/helm}"
ARCHES=(amd64 arm64)
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

log() { printf 'release: %s\n' "$*" >&2; }
fail() { printf 'release: FAILED: %s\n' "$*" >&2; exit 1; }

# semver VERSION: prints VERSION without a leading v, or fails.
semver() {
  local v="${1#v}"
  [[ "$v" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$ ]] ||
    fail "VERSION '$1' is not SemVer (1.2.3 or 1.2.3-rc.1): Helm needs one for the chart"
  printf '%s' "$v"
}

# package_chart VERSION OUTDIR: helm package with version and appVersion VERSION.
package_chart() {
  local version="$1" out="$2"
  [ -x "$HELM" ] || fail "helm is not at $HELM: run hack/install-test-deps.sh tools"
  mkdir -p "$out"
  # A user's helm configuration must not change the package.
  HELM_CONFIG_HOME="$out/.helm/config" HELM_CACHE_HOME="$out/.helm/cache" HELM_DATA_HOME="$out/.helm/data" \
    "$HELM" package "$ROOT/charts/kube2ra" --version "$version" --app-version "$version" --destination "$out" >&2
  rm -rf "$out/.helm"
  log "chart $out/kube2ra-$version.tgz"
}

# binaries VERSION OUTDIR: the agent for every architecture in ARCHES.
binaries() {
  local version="$1" out="$2" arch commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  for arch in "${ARCHES[@]}"; do
    (cd "$ROOT" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath \
      -ldflags "-s -w -X main.version=$version -X main.commit=$commit" \
      -o "$out/kube2ra-$version-linux-$arch" ./cmd/kube2ra)
    check_binary "$version" "$arch" "$out/kube2ra-$version-linux-$arch"
  done
}

# check_binary VERSION ARCH FILE: FILE starts and says it is VERSION for
# linux/ARCH; a foreign architecture runs under qemu-ARCH-static.
check_binary() {
  local version="$1" arch="$2" bin="$3" runner=() qemu out
  if [ "$arch" != "$(go env GOHOSTARCH)" ]; then
    case "$arch" in
      arm64) qemu=qemu-aarch64-static ;;
      amd64) qemu=qemu-x86_64-static ;;
      *) qemu=qemu-$arch-static ;;
    esac
    command -v "$qemu" >/dev/null 2>&1 ||
      fail "$qemu is not on PATH to check the $arch binary: apt-get install qemu-user-static (hack/install-test-deps.sh release)"
    runner=("$qemu")
  fi
  out=$("${runner[@]}" "$bin" version 2>&1) || fail "$bin version: $out"
  [[ "$out" == "kube2ra $version "*"linux/$arch)" ]] || fail "$bin version printed '$out', want kube2ra $version for linux/$arch"
  log "binary $bin: $out${runner[*]:+ (under ${runner[*]})}"
}

main() {
  if [ "${1:-}" = chart ]; then
    [ $# -eq 3 ] || fail "usage: $0 chart VERSION OUTDIR"
    package_chart "$(semver "$2")" "$3"
    return
  fi
  [ $# -ge 1 ] && [ -n "$1" ] || fail "usage: $0 VERSION [OUTDIR] (make release VERSION=1.2.3)"
  local version out start
  version=$(semver "$1")
  out="${2:-$ROOT/dist/$version}"
  start=$(date +%s)
  rm -rf "$out"
  mkdir -p "$out"
  binaries "$version" "$out"
  package_chart "$version" "$out"
  (cd "$out" && sha256sum kube2ra-* > SHA256SUMS)
  log "checksums $out/SHA256SUMS"
  log "done in $(( $(date +%s) - start ))s"
}

main "$@"
