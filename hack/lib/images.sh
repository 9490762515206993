# Sourced by hack/cluster-images.sh and hack/release.sh: Debian root
# filesystems made with mmdebstrap from the Debian mirror, imported as base
# images into one buildah store, all cached in $KUBE2RA_CACHE. Bases made
# here stand in for Docker Hub's golang and debian:bookworm-slim (the
# Dockerfile's GO_IMAGE and RUNTIME_IMAGE), so no registry is needed.
# The sourcing script defines log and fail and runs as root.

CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
IMAGES="$CACHE_DIR/images"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
HOST_ARCH="$(dpkg --print-architecture)"

# One buildah store per user of this file, apart from any other use of
# buildah here: STORE_NAME under the cache, with STORE_DRIVER (vfs, the
# cluster tier's, works anywhere; overlay is much faster where the kernel
# allows it, since vfs copies a whole root filesystem for every step).
STORE_NAME="${STORE_NAME:-buildah}" STORE_DRIVER="${STORE_DRIVER:-vfs}"
BUILDAH=(buildah --storage-driver "$STORE_DRIVER" --root "$CACHE_DIR/$STORE_NAME/root" --runroot "$CACHE_DIR/$STORE_NAME/run")

# rootfs NAME PACKAGES...: a minbase bookworm tarball for this machine's
# architecture with PACKAGES, cached.
rootfs() { rootfs_arch "$HOST_ARCH" "$@"; }

# rootfs_arch ARCH NAME PACKAGES...: the same for a Debian architecture
# (arm64, ...); a foreign one runs its maintainer scripts under
# qemu-user-static (binfmt_misc).
rootfs_arch() {
  local arch="$1" name="$2"; shift 2
  # The host's key is what it was before architectures were an argument,
  # so existing caches stay valid.
  local key
  if [ "$arch" = "$HOST_ARCH" ]; then
    key=$(printf '%s\n' "$SUITE" "$@" | sha256sum | cut -c1-12)
  else
    key=$(printf '%s\n' "$SUITE" "$arch" "$@" | sha256sum | cut -c1-12)
  fi
  local out="$IMAGES/rootfs-$name-$key.tar"
  if [ ! -s "$out" ]; then
    log "mmdebstrap $SUITE $arch ($name: ${*:-minbase}) from $MIRROR"
    local inc=(); [ $# -eq 0 ] || inc=(--include="$(IFS=,; echo "$*")")
    mmdebstrap --quiet --variant=minbase --architectures="$arch" "${inc[@]}" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$SUITE" "$out.tmp.tar" "$MIRROR" >&2 || fail "mmdebstrap $name ($arch)"
    mv "$out.tmp.tar" "$out"
  fi
  echo "$out"
}

# rootfs_key TARBALL: the cache key in a rootfs tarball's name.
rootfs_key() { basename "$1" .tar | sed 's/.*-//'; }

# have REF: the image is in the buildah store.
have() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# base REF TARBALL [GOROOT] [ARCH]: imports a root filesystem as an image
# (of ARCH, default this machine's); with GOROOT, a Go toolchain at
# /usr/local/go and golang's PATH and GOPATH.
base() {
  local ref="$1" tarball="$2" goroot="${3:-}" arch="${4:-$HOST_ARCH}"
  have "$ref" && return 0
  log "importing $tarball as $ref"
  local c mnt
  c=$("${BUILDAH[@]}" from scratch)
  mnt=$("${BUILDAH[@]}" mount "$c")
  tar -xf "$tarball" -C "$mnt"
  local env=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  if [ -n "$goroot" ]; then
    mkdir -p "$mnt/usr/local/go" "$mnt/go"
    cp -a "$goroot/." "$mnt/usr/local/go/"
    env=(--env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
         --env GOPATH=/go --env GOTOOLCHAIN=local)
  fi
  "${BUILDAH[@]}" umount "$c" >/dev/null
  "${BUILDAH[@]}" config "${env[@]}" --os linux --arch "$arch" --workingdir / "$c"
  "${BUILDAH[@]}" commit --quiet "$c" "$ref" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
}

# local_bases ARCH: makes the Dockerfile's two bases for building an ARCH
# image on this machine and prints their references, GO_IMAGE (this
# machine's architecture: the build stage cross-compiles) then
# RUNTIME_IMAGE (ARCH).
local_bases() {
  local arch="$1"
  local host_fs fs goversion
  host_fs=$(rootfs minbase)
  goversion=$(go env GOVERSION)
  local golang_ref="localhost/kube2ra-base/golang:${goversion#go}-$SUITE-$(rootfs_key "$host_fs")"
  base "$golang_ref" "$host_fs" "$(go env GOROOT)"
  local runtime_ref
  if [ "$arch" = "$HOST_ARCH" ]; then
    fs="$host_fs"
    runtime_ref="localhost/kube2ra-base/debian:$SUITE-minbase-$(rootfs_key "$fs")"
  else
    fs=$(rootfs_arch "$arch" minbase)
    runtime_ref="localhost/kube2ra-base/debian-$arch:$SUITE-minbase-$(rootfs_key "$fs")"
  fi
  base "$runtime_ref" "$fs" "" "$arch"
  echo "$golang_ref $runtime_ref"
}
