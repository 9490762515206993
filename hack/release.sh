#!/usr/bin/env bash
# What `make release VERSION=x.y.z` publishes, in one directory
# (RELEASE_DIR, default dist/VERSION):
#   kube2ra-VERSION.oci.tar   the agent image for every platform in
#                             PLATFORMS (default "linux/amd64 linux/arm64"):
#                             one OCI index in an oci-archive, each image
#                             built from ./Dockerfile with buildah
#   kube2ra-VERSION.tgz       the chart (helm package)
#   SHA256SUMS                both, for `sha256sum -c`
# VERSION is the one place a release's version lives: the chart's version
# and appVersion (so the chart's default image tag), the image's tag and
# label, and what `kube2ra version` prints.
#
# The Dockerfile's build stage runs on this machine's platform and
# cross-compiles (GOARCH=$TARGETARCH); only a foreign platform's runtime
# stage (apt-get install iptables) runs under emulation, qemu-user-static
# through binfmt_misc. Before an image goes into the index, its binary's ELF
# machine must be the platform's and the image must start `kube2ra version`
# (emulated for a foreign platform) and print VERSION.
#
# Bases: RELEASE_BASES=debian (default) makes the Dockerfile's GO_IMAGE and
# RUNTIME_IMAGE from the Debian mirror with mmdebstrap (hack/lib/images.sh;
# no Docker Hub needed); RELEASE_BASES=dockerfile keeps the Dockerfile's
# golang and debian:bookworm-slim from Docker Hub. Layers and Go caches are
# kept in $KUBE2RA_CACHE, so a second run rebuilds only what changed.
#
# Needs root (buildah's vfs store, mmdebstrap), buildah, helm
# ($KUBE2RA_CACHE/bin/helm or PATH), skopeo, and for foreign platforms
# qemu-user-static with binfmt_misc: hack/install-test-deps.sh release.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

log() { printf 'release: %s\n' "$*" >&2; }
fail() { printf 'release: FAILED: %s\n' "$*" >&2; exit 1; }
# A store of its own, overlay by default (RELEASE_STORE_DRIVER=vfs where
# the kernel refuses overlay mounts): vfs copies a root filesystem per step,
# minutes for a release whose layers are all cached.
STORE_NAME=buildah-release STORE_DRIVER="${RELEASE_STORE_DRIVER:-overlay}"
# CACHE_DIR, IMAGES, BUILDAH, HOST_ARCH, local_bases.
. "$REPO/hack/lib/images.sh"

VERSION="${VERSION:-}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
RELEASE_BASES="${RELEASE_BASES:-debian}"
RELEASE_DIR="${RELEASE_DIR:-$REPO/dist/$VERSION}"
COMMIT="${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
HELM="${KUBE2RA_HELM:-$CACHE_DIR/bin/helm}"
[ -x "$HELM" ] || HELM=$(command -v helm || true)

# A chart version is semver; an image tag cannot hold "+".
semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'
[[ "$VERSION" =~ $semver ]] ||
  fail "VERSION='$VERSION' is not a release version: give MAJOR.MINOR.PATCH with an optional -prerelease and no leading v (make release VERSION=0.2.0); it becomes the chart's version and appVersion and the image's tag"
case "$RELEASE_BASES" in debian|dockerfile) ;; *) fail "RELEASE_BASES='$RELEASE_BASES': use debian (bases from the Debian mirror) or dockerfile (the Dockerfile's Docker Hub images)" ;; esac
[ "$(id -u)" -eq 0 ] || fail "needs root (buildah's vfs store, mmdebstrap)"
for t in buildah skopeo go git sha256sum jq; do
  command -v "$t" >/dev/null 2>&1 || fail "$t is not on PATH: run hack/install-test-deps.sh release"
done
[ -n "$HELM" ] || fail "no helm in $CACHE_DIR/bin or on PATH: run hack/install-test-deps.sh tools"
[ "$RELEASE_BASES" = dockerfile ] || command -v mmdebstrap >/dev/null 2>&1 || fail "mmdebstrap is not on PATH: run hack/install-test-deps.sh release"

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

start=$(date +%s)
mkdir -p "$RELEASE_DIR" "$IMAGES"
gomodcache=$(go env GOMODCACHE) gocache=$(go env GOCACHE)
mkdir -p "$gomodcache" "$gocache"
list="localhost/kube2ra-release:$VERSION"
"${BUILDAH[@]}" manifest rm "$list" >/dev/null 2>&1 || true
"${BUILDAH[@]}" manifest create "$list" >/dev/null
created=$(git -C "$REPO" log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)

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
  (cd "$REPO" && "${BUILDAH[@]}" bud --quiet --layers --network host --platform "$platform" "${bases[@]}" \
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

rm -f "$RELEASE_DIR/kube2ra-$VERSION.tgz"
HELM_CONFIG_HOME="$RELEASE_DIR/.helm" HELM_CACHE_HOME="$RELEASE_DIR/.helm" HELM_DATA_HOME="$RELEASE_DIR/.helm" \
  "$HELM" package "$REPO/charts/kube2ra" --version "$VERSION" --app-version "$VERSION" -d "$RELEASE_DIR" >/dev/null ||
  fail "helm package charts/kube2ra"
rm -rf "$RELEASE_DIR/.helm"
(cd "$RELEASE_DIR" && sha256sum "kube2ra-$VERSION.oci.tar" "kube2ra-$VERSION.tgz" > SHA256SUMS)

log "kube2ra $VERSION for ${got% } in $RELEASE_DIR ($(( $(date +%s) - start ))s):"
sed 's/^/release:   /' "$RELEASE_DIR/SHA256SUMS" >&2
cat >&2 <<MSG
release: publish to your registry (README.md, "Publishing a release"):
release:   skopeo copy --all oci-archive:$image_out docker://REGISTRY/kube2ra/kube2ra:$VERSION
release:   helm push $RELEASE_DIR/kube2ra-$VERSION.tgz oci://REGISTRY/charts
MSG
