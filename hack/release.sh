#!/usr/bin/env bash
# What `make release VERSION=…` runs: the release artefacts a user publishes
# to their own registry, in dist/<version>/:
#   kube2ra-<version>.oci.tar
#                     the agent image for every platform in PLATFORMS
#                     (default "linux/amd64 linux/arm64"): one OCI index in an
#                     oci-archive, each image built from ./Dockerfile with
#                     buildah (`skopeo copy --all` publishes it)
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
# The image: the Dockerfile's build stage runs on this machine's platform and
# cross-compiles (GOARCH=$TARGETARCH); only a foreign platform's runtime
# stage (apt-get install iptables) runs emulated, qemu-user-static through
# binfmt_misc. Before an image goes into the index, its binaries' ELF machine
# must be the platform's and the image must start `kube2ra version`
# (emulated for a foreign platform) and print the version and platform.
# Bases: RELEASE_BASES=debian (default) makes the Dockerfile's GO_IMAGE and
# RUNTIME_IMAGE from the Debian mirror with mmdebstrap (hack/lib/images.sh;
# no Docker Hub needed); RELEASE_BASES=dockerfile keeps the Dockerfile's
# golang and debian:bookworm-slim from Docker Hub. Layers and Go caches stay
# in $KUBE2RA_CACHE, so a second run rebuilds only what changed.
#
#   release.sh VERSION [OUTDIR]        everything above
#   release.sh chart VERSION OUTDIR    only the packaged chart (test/chart uses it)
#
# VERSION is SemVer 2 (1.2.3, 1.2.3-rc.1; a leading v is dropped), which Helm
# requires of a chart version and OCI tags accept. The version is given in
# this one place: Chart.yaml's version and appVersion in the source tree stay
# the development values and are overridden only in the package; the image's
# tag, version label and `kube2ra version` are the same.
#
# Needs for the image: root (buildah's store, mmdebstrap), buildah, skopeo,
# jq, mmdebstrap, and for foreign platforms qemu-user-static with binfmt_misc
# (hack/install-test-deps.sh release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
HELM="${KUBE2RA_HELM:-$CACHE_DIR/bin/helm}"
ARCHES=(amd64 arm64)
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
RELEASE_BASES="${RELEASE_BASES:-debian}"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

log() { printf 'release: %s\n' "$*" >&2; }
fail() { printf 'release: FAILED: %s\n' "$*" >&2; exit 1; }
# The image's buildah store is its own, overlay by default
# (RELEASE_STORE_DRIVER=vfs where the kernel refuses overlay mounts): vfs
# copies a root filesystem per step, 99 s for a release whose layers are all
# cached.
STORE_NAME=buildah-release STORE_DRIVER="${RELEASE_STORE_DRIVER:-overlay}"
# IMAGES, BUILDAH, HOST_ARCH, local_bases (CACHE_DIR as above).
. "$ROOT/hack/lib/images.sh"

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

# elf_machine FILE: the ELF e_machine of a little-endian binary, as a GOARCH.
elf_machine() {
  case "$(od -An -tx1 -j18 -N2 "$1" | tr -d ' \n')" in
    3e00) echo amd64 ;; b700) echo arm64 ;; 2800) echo arm ;; 1500) echo ppc64le ;; 1600) echo s390x ;; f300) echo riscv64 ;;
    *) echo "unknown" ;;
  esac
}

# foreign_ready ARCH: this machine can run ARCH binaries (binfmt_misc).
foreign_ready() {
  local qemu
  case "$1" in arm64) qemu=aarch64 ;; amd64) qemu=x86_64 ;; arm) qemu=arm ;; ppc64le) qemu=ppc64le ;; s390x) qemu=s390x ;; riscv64) qemu=riscv64 ;; *) qemu="$1" ;; esac
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] && return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  fi
  command -v update-binfmts >/dev/null 2>&1 && update-binfmts --enable "qemu-$qemu" >/dev/null 2>&1 || true
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] ||
    fail "$1 binaries cannot run here: install qemu-user-static and binfmt-support (hack/install-test-deps.sh release) so the $1 runtime stage can run under emulation"
}

# image VERSION OUTDIR: the agent image for every platform in PLATFORMS,
# one OCI index, as OUTDIR/kube2ra-VERSION.oci.tar.
image() {
  local VERSION="$1" RELEASE_DIR="$2" COMMIT platform os arch bases golang_ref runtime_ref ref t0 got_arch c mnt bin out
  local gomodcache gocache list created image_out want got
  COMMIT="${COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  case "$RELEASE_BASES" in debian|dockerfile) ;; *) fail "RELEASE_BASES='$RELEASE_BASES': use debian (bases from the Debian mirror) or dockerfile (the Dockerfile's Docker Hub images)" ;; esac
  [ "$(id -u)" -eq 0 ] || fail "the image needs root (buildah's store, mmdebstrap)"
  local t
  for t in buildah skopeo jq; do
    command -v "$t" >/dev/null 2>&1 || fail "$t is not on PATH: run hack/install-test-deps.sh release"
  done
  [ "$RELEASE_BASES" = dockerfile ] || command -v mmdebstrap >/dev/null 2>&1 || fail "mmdebstrap is not on PATH: run hack/install-test-deps.sh release"
  mkdir -p "$IMAGES"
  gomodcache=$(go env GOMODCACHE) gocache=$(go env GOCACHE)
  mkdir -p "$gomodcache" "$gocache"
  list="localhost/kube2ra-release:$VERSION"
  "${BUILDAH[@]}" manifest rm "$list" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" manifest create "$list" >/dev/null
  created=$(git -C "$ROOT" log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)

  for platform in $PLATFORMS; do
    os=${platform%%/*} arch=${platform#*/}
    [ "$os" = linux ] || fail "platform $platform: kube2ra runs on linux only"
    [ "$arch" = "$HOST_ARCH" ] || foreign_ready "$arch"
    bases=()
    if [ "$RELEASE_BASES" = debian ]; then
      # Under cluster-images.sh's lock: both make bases in the same store.
      read -r golang_ref runtime_ref < <(exec 8>"$IMAGES/.lock"; flock -w 1200 8 && local_bases "$arch")
      [ -n "$runtime_ref" ] || fail "making the local base images for $arch"
      bases=(--build-arg GO_IMAGE="$golang_ref" --build-arg RUNTIME_IMAGE="$runtime_ref")
    fi
    ref="localhost/kube2ra-release:$VERSION-$arch"
    t0=$(date +%s)
    log "building $platform from the Dockerfile as $ref"
    # BUILDPLATFORM and TARGETPLATFORM by hand: buildah 1.28 sets neither
    # (see the Dockerfile).
    (cd "$ROOT" && "${BUILDAH[@]}" bud --quiet --layers --network host --platform "$platform" "${bases[@]}" \
      --build-arg BUILDPLATFORM="linux/$HOST_ARCH" --build-arg TARGETPLATFORM="$platform" \
      --build-arg VERSION="$VERSION" --build-arg COMMIT="$COMMIT" --build-arg CREATED="$created" \
      --volume "$gomodcache:/go/pkg/mod" --volume "$gocache:/root/.cache/go-build" \
      -t "$ref" -f Dockerfile . >&2) || fail "buildah bud --platform $platform"

    # The image is what it says it is, and starts.
    got_arch=$("${BUILDAH[@]}" inspect --type image --format '{{.OCIv1.Architecture}}' "$ref")
    [ "$got_arch" = "$arch" ] || fail "$ref's config says architecture $got_arch, want $arch"
    c=$("${BUILDAH[@]}" from --pull-never --platform "$platform" "$ref")
    mnt=$("${BUILDAH[@]}" mount "$c")
    for bin in "$mnt/kube2ra" "$mnt"/kube2ra-cni; do
      [ -e "$bin" ] || continue
      [ "$(elf_machine "$bin")" = "$arch" ] || fail "${bin#"$mnt"} in $ref is an $(elf_machine "$bin") binary, want $arch"
    done
    "${BUILDAH[@]}" umount "$c" >/dev/null
    out=$("${BUILDAH[@]}" run --network none "$c" -- /kube2ra version 2>&1) || fail "$ref: /kube2ra version failed: $out"
    "${BUILDAH[@]}" rm "$c" >/dev/null
    grep -qF "kube2ra $VERSION " <<<"$out" && grep -qF "linux/$arch)" <<<"$out" ||
      fail "$ref: kube2ra version printed '$out', want $VERSION on linux/$arch"
    log "$platform: $(head -1 <<<"$out") ($(( $(date +%s) - t0 ))s)"
    "${BUILDAH[@]}" manifest add "$list" "containers-storage:$ref" >/dev/null
  done

  image_out="$RELEASE_DIR/kube2ra-$VERSION.oci.tar"
  rm -f "$image_out"
  "${BUILDAH[@]}" manifest push --quiet --all "$list" "oci-archive:$image_out:kube2ra:$VERSION" >&2 ||
    fail "writing the image index to $image_out"
  # The archive holds one index with every platform.
  want=$(tr ' ' '\n' <<<"$PLATFORMS" | grep . | sort | tr '\n' ' ')
  got=$(skopeo inspect --raw "oci-archive:$image_out" | jq -r '.manifests[] | .platform.os + "/" + .platform.architecture' | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || fail "$image_out's index holds '$got', want '$want'"
  log "image $image_out: one index for ${got% }"
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
  image "$version" "$out"
  binaries "$version" "$out"
  package_chart "$version" "$out"
  (cd "$out" && sha256sum kube2ra-* > SHA256SUMS)
  log "checksums $out/SHA256SUMS"
  log "done in $(( $(date +%s) - start ))s; publish (README.md, \"Publishing a release\"):"
  log "  skopeo copy --all oci-archive:$out/kube2ra-$version.oci.tar docker://REGISTRY/kube2ra/kube2ra:$version"
  log "  helm push $out/kube2ra-$version.tgz oci://REGISTRY/charts"
}

main "$@"
