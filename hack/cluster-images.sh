#!/usr/bin/env bash
# Builds the images the real-node tier (make e2e-cluster) runs, without
# pulling from any container registry, and caches them outside the repository:
#   $KUBE2RA_CACHE/images/<name>.oci.tar   (oci-archive, one image each)
#
#   kube2ra     the agent, built FROM THE PROJECT'S Dockerfile with
#               `buildah bud`; its GO_IMAGE and RUNTIME_IMAGE build arguments
#               point at the local bases below instead of Docker Hub's
#               golang and debian:bookworm-slim. The tier pushes it to its
#               own registry, which the node pulls it from.
#   client      Debian bookworm with the AWS CLI v2 (Debian's awscli), boto3
#               (python3-boto3) and test/e2e/podclient (aws-sdk-go-v2); and
#               under /opt/boto3 (PYTHONPATH) a boto3 with EKS Pod Identity
#               support (Debian's 1.26 accepts only 169.254.170.2 and loopback
#               as a container-credentials host): this machine's own, or else
#               one pip installs, cached by version.
#   pause       the sandbox image: one static binary that waits for a signal.
#
# Bases (cached, keyed by what they hold):
#   bookworm    `mmdebstrap --variant=minbase bookworm` from the Debian mirror
#               (what debian:bookworm-slim is);
#   golang      bookworm plus this machine's Go toolchain ($(go env GOROOT)),
#               with golang's PATH/GOPATH.
# The agent image is keyed by a hash of the files its build context holds
# (the Dockerfile and the Go sources), so a source change rebuilds it and a
# warm run reuses it. The Dockerfile's RUN steps reach the Go module proxy and
# the Debian mirror through the host network; the host's module and build
# caches are mounted so a rebuild compiles only what changed.
#
# Usage: cluster-images.sh            prints "<name> <archive> <image ref>" per image
# Needs root (buildah with the vfs driver, mmdebstrap), buildah, mmdebstrap.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

log() { printf 'cluster-images: %s\n' "$*" >&2; }
fail() { printf 'cluster-images: FAILED: %s\n' "$*" >&2; exit 1; }
# CACHE_DIR, IMAGES, BUILDAH, rootfs, have, base, local_bases.
. "$REPO/hack/lib/images.sh"
for t in buildah mmdebstrap go git sha256sum; do
  command -v "$t" >/dev/null 2>&1 || fail "$t is not on PATH: run hack/install-test-deps.sh"
done
[ "$(id -u)" -eq 0 ] || fail "needs root (buildah's vfs storage and mmdebstrap)"

mkdir -p "$IMAGES"
exec 8>"$IMAGES/.lock"
flock -w 1200 8 || fail "another cluster-images.sh held $IMAGES/.lock for 20 minutes"

# archive NAME REF: writes REF as an oci-archive (once) and prints the line.
archive() {
  local name="$1" ref="$2"
  local out="$IMAGES/$name-$(echo "$ref" | sha256sum | cut -c1-12).oci.tar"
  if [ ! -s "$out" ]; then
    rm -f "$out.tmp.tar"
    "${BUILDAH[@]}" push --quiet "$ref" "oci-archive:$out.tmp.tar:$ref" >&2 || fail "buildah push $ref"
    mv "$out.tmp.tar" "$out"
  fi
  echo "$name $out $ref"
}

# static NAME PKG: a static binary of a package of this module.
static() {
  local out="$CACHE_DIR/images/bin/$1"
  mkdir -p "$(dirname "$out")"
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out" "$2") || fail "go build $2"
  echo "$out"
}

read -r golang_ref runtime_ref < <(local_bases "$HOST_ARCH")
[ -n "$runtime_ref" ] || fail "making the local base images"

# The agent, from the Dockerfile. The tag is the hash of the build context.
ctxhash=$(cd "$REPO" && git ls-files -co --exclude-standard -- Dockerfile .dockerignore go.mod go.sum '*.go' |
  grep -v -e '_test\.go$' -e '^test/' -e '^hack/' | sort | xargs sha256sum | sha256sum | cut -c1-12)
agent_ref="localhost/kube2ra:ctx-$ctxhash"
if ! have "$agent_ref"; then
  log "buildah bud the Dockerfile as $agent_ref"
  gomodcache=$(go env GOMODCACHE) gocache=$(go env GOCACHE)
  mkdir -p "$gomodcache" "$gocache"
  # No --layers: with the vfs driver every cached step is a whole copy of
  # the root filesystem (about 5 GB a build), and a new context rebuilds
  # anyway (the module and build caches are mounted in).
  (cd "$REPO" && "${BUILDAH[@]}" bud --quiet --network host \
    --build-arg GO_IMAGE="$golang_ref" --build-arg RUNTIME_IMAGE="$runtime_ref" \
    --build-arg BUILDPLATFORM="linux/$HOST_ARCH" --build-arg TARGETPLATFORM="linux/$HOST_ARCH" \
    --build-arg VERSION="cluster-$ctxhash" --build-arg COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --volume "$gomodcache:/go/pkg/mod" --volume "$gocache:/root/.cache/go-build" \
    -t "$agent_ref" -f Dockerfile . >&2) || fail "buildah bud of the Dockerfile"
fi
agent_line=$(archive kube2ra "$agent_ref")
echo "$agent_line"

# The sandbox image.
pause_bin=$(static pause ./test/cluster/pause)
pause_ref="localhost/kube2ra-test/pause:$(sha256sum "$pause_bin" | cut -c1-12)"
if ! have "$pause_ref"; then
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy --quiet "$c" "$pause_bin" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' "$c"
  "${BUILDAH[@]}" commit --quiet "$c" "$pause_ref" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
fi
pause_line=$(archive pause "$pause_ref")
echo "$pause_line"

# The client image: the three SDK clients a user's application would use.
client_rootfs=$(rootfs client ca-certificates awscli python3-boto3 curl)
client_base="localhost/kube2ra-base/client:$(basename "$client_rootfs" .tar | cut -d- -f3)"
base "$client_base" "$client_rootfs"
podclient_bin=$(static podclient ./test/e2e/podclient)

# pod_identity_boto3: a directory with boto3, botocore and s3transfer that
# speak EKS Pod Identity (botocore 1.34 added 169.254.170.23), pure Python;
# Debian's python3-dateutil, -jmespath and -urllib3 in the image serve them.
BOTO3_MIN=1.34
pod_identity_boto3() {
  local have_version
  have_version=$(python3 -c 'import boto3; print(boto3.__version__)' 2>/dev/null || true)
  if [ -n "$have_version" ] && [ "$(printf '%s\n' "$BOTO3_MIN" "$have_version" | sort -V | head -1)" = "$BOTO3_MIN" ]; then
    local out="$IMAGES/boto3-$have_version"
    if [ ! -d "$out" ]; then
      mkdir -p "$out.tmp"
      for pkg in boto3 botocore s3transfer; do
        cp -a "$(python3 -c "import os, $pkg; print(os.path.dirname($pkg.__file__))")" "$out.tmp/" || fail "copying $pkg"
      done
      find "$out.tmp" -name __pycache__ -prune -exec rm -rf {} +
      mv "$out.tmp" "$out"
    fi
    echo "$out"; return
  fi
  local out="$IMAGES/boto3-pip"
  if [ ! -d "$out" ]; then
    log "python3 has boto3 '${have_version:-none}' (< $BOTO3_MIN): pip install boto3>=$BOTO3_MIN"
    python3 -m pip install --quiet --no-compile --no-deps --target "$out.tmp" "boto3>=$BOTO3_MIN" "botocore>=$BOTO3_MIN" s3transfer >&2 ||
      fail "no boto3 >= $BOTO3_MIN for the pod-identity scenario: pip install 'boto3>=$BOTO3_MIN' (or give pip an index)"
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}
boto3_dir=$(pod_identity_boto3)

client_ref="localhost/kube2ra-test/client:$( (cat "$podclient_bin"; echo "$client_base"; basename "$boto3_dir") | sha256sum | cut -c1-12)"
if ! have "$client_ref"; then
  c=$("${BUILDAH[@]}" from "$client_base")
  "${BUILDAH[@]}" copy --quiet "$c" "$podclient_bin" /usr/local/bin/podclient >/dev/null
  "${BUILDAH[@]}" copy --quiet "$c" "$boto3_dir" /opt/boto3 >/dev/null
  "${BUILDAH[@]}" commit --quiet "$c" "$client_ref" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
fi
client_line=$(archive client "$client_ref")
echo "$client_line"

# Only this run's images stay in the store (and the bases): every earlier
# build of the agent, the pause and the client image goes, with the
# untagged images they leave, and so do their archives once an hour old
# (a run on another tree may still be importing a younger one).
keep=("$agent_ref" "$pause_ref" "$client_ref")
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null |
  grep -e '^localhost/kube2ra:ctx-' -e '^localhost/kube2ra-test/' | while read -r ref; do
  case " ${keep[*]} " in *" $ref "*) continue ;; esac
  "${BUILDAH[@]}" rmi "$ref" >/dev/null 2>&1 || log "could not remove the old image $ref"
done
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || log "could not prune the store's untagged images"
for f in "$IMAGES"/kube2ra-*.oci.tar "$IMAGES"/pause-*.oci.tar "$IMAGES"/client-*.oci.tar; do
  [ -e "$f" ] || continue
  case "$agent_line $pause_line $client_line " in *" $f "*) continue ;; esac
  find "$f" -mmin +60 -delete 2>/dev/null || true
done
