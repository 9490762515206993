#!/usr/bin/env bash
# Installs what kube2ra's test tiers need, and only what is missing:
#   - demo (make demo, a first look): only what the demo uses, etcd-server
#     iptables iproute2 curl from Debian, the kube-apiserver build, and helm
#     (the demo grants the agent exactly the chart's ClusterRole, rendered
#     with helm; it runs inside a network namespace, so it cannot install
#     helm itself);
#   - Debian packages: etcd-server (test control plane), iptables (both the
#     nft and legacy backends) nftables iproute2 conntrack (simulated nodes),
#     python3-botocore (test/sdkrefresh drives its refresh code),
#     containernetworking-plugins (bridge and host-local: the primary CNI
#     that cni/plugin's integration tests chain kube2ra-cni after),
#     awscli (a client we did not write), curl jq;
#   - kube-apiserver, built from the Go module proxy by build-kube.sh
#     and cached in $KUBE2RA_CACHE (default ~/.cache/kube2ra);
#   - kube-node (make e2e-cluster): Debian containerd runc
#     containernetworking-plugins buildah mmdebstrap, docker-registry (the
#     registry the node pulls the agent and helm the chart from) and skopeo
#     (pushes the image to it), and kubelet,
#     kube-controller-manager, kube-scheduler, kube-proxy from build-kube.sh
#     (and it says whether python3's boto3 is 1.34 or later, which the
#     token-door scenario copies into its client image);
#   - release (make release): buildah mmdebstrap arch-test skopeo jq, and
#     qemu-user-static with binfmt-support, registered in binfmt_misc, so
#     the arm64 image's runtime stage runs under emulation;
#   - helm and staticcheck, built with `go install` into $KUBE2RA_CACHE/bin;
#   - js-sdk: the AWS SDK for JavaScript v3 (test/e2e runs it in pods),
#     installed with `npm ci` from hack/js-sdk/package-lock.json into
#     $KUBE2RA_CACHE/npm/aws-sdk-js-v3-<version>; nodejs and npm from
#     Debian when node is missing (the SDK needs node 20 or later).
# Arguments pick parts (all, demo, packages, kube-apiserver, kube-node, tools,
# js-sdk, prometheus, registry, release; default all, which is everything
# but demo's subset).
# Safe to run again: a second run only checks. Prints how long each step took.
# Runs non-interactively (CI=true or not). Needs root (or password-less sudo)
# only when a Debian package is missing.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# staticcheck 2026.1 is module version v0.7.0; the proxy cannot resolve the
# "2026.1" tag name itself.
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.7.0}"
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
APT_PACKAGES=(etcd-server iptables nftables iproute2 awscli curl jq conntrack python3-botocore containernetworking-plugins)
# make demo: the API server's etcd, the node's iptables and network
# namespaces, and curl, which the demo's pods run.
DEMO_PACKAGES=(etcd-server iptables iproute2 curl)
# The alerting rules' unit tests (promtool) and the real Prometheus that
# test/e2e points at a running agent.
PROMETHEUS_PACKAGES=(prometheus)
# The OCI registry test/chart pushes the packaged chart to (the CNCF
# distribution registry). On a machine booted with systemd the package also
# enables its own service on :5000; the tests run their own on loopback.
REGISTRY_PACKAGES=(docker-registry)
# The real-node tier (make e2e-cluster): a container runtime, the CNI
# plugins, and what builds images without a registry.
NODE_PACKAGES=(containerd runc containernetworking-plugins buildah mmdebstrap util-linux docker-registry skopeo)
# make release (make test runs it as release-smoke): a multi-platform image
# (foreign runtime stages under qemu-user-static through binfmt_misc, the
# arm64 binary under qemu-aarch64-static), the chart, and their checks.
RELEASE_PACKAGES=(buildah mmdebstrap arch-test skopeo jq qemu-user-static binfmt-support)
# The JavaScript SDK's runtime. A NodeSource nodejs already bundles npm, so
# these are installed only when node is missing.
JS_PACKAGES=(nodejs npm)

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${KUBE2RA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube2ra}"
BIN_DIR="$CACHE_DIR/bin"
export DEBIAN_FRONTEND=noninteractive GOTOOLCHAIN=local

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
fail() { printf 'install-test-deps: FAILED: %s\n' "$*" >&2; exit 1; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# elapsed START_MS: seconds since START_MS, one decimal.
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
# step NAME COMMAND...: runs one step and prints its duration.
step() {
  local name="$1"; shift
  local start; start=$(now_ms)
  if ! "$@"; then
    fail "step '$name' failed after $(elapsed "$start")s; see the messages above"
  fi
  printf 'install-test-deps: %-28s %6ss\n' "$name" "$(elapsed "$start")" >&2
}

# as_root runs a command as root, through sudo -n when needed.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    log "need root to run: $*"
    log "run this script as root, or install the packages yourself: apt-get install ${APT_PACKAGES[*]}"
    return 1
  fi
}

apt_packages() {
  local missing=()
  local p
  for p in "${@:-${APT_PACKAGES[@]}}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages present: ${*:-${APT_PACKAGES[*]}}"
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq || { log "apt-get update failed"; return 1; }
  as_root apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" ||
    { log "apt-get install ${missing[*]} failed"; return 1; }
}

check_tools() {
  local t
  for t in etcd ip nft iptables iptables-legacy iptables-nft ip6tables-legacy ip6tables-nft conntrack aws curl jq; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is not on PATH after installing the Debian packages"; return 1; }
  done
  # Both iptables backends must work: kube2ra picks whichever the host uses.
  local b out
  for b in iptables-legacy iptables-nft; do
    out=$("$b" -V 2>&1) || { log "$b -V failed: $out"; return 1; }
    if [ "$(id -u)" -eq 0 ]; then
      out=$("$b" -w 5 -t nat -S 2>&1) ||
        { log "$b cannot read the nat table ($out); the kernel may lack the module for this backend"; return 1; }
    fi
  done
  log "iptables backends usable: $(iptables-legacy -V), $(iptables-nft -V)"
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] ||
    { log "/usr/lib/cni/bridge or host-local missing: apt-get install containernetworking-plugins"; return 1; }
}

check_demo_tools() {
  local t
  for t in etcd ip iptables iptables-legacy iptables-nft curl; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is not on PATH after installing ${DEMO_PACKAGES[*]}"; return 1; }
  done
}

check_registry_tools() {
  command -v docker-registry >/dev/null 2>&1 || { log "docker-registry is not on PATH after installing ${REGISTRY_PACKAGES[*]}"; return 1; }
}

check_prometheus_tools() {
  local t
  for t in prometheus promtool; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is not on PATH after installing ${PROMETHEUS_PACKAGES[*]}"; return 1; }
  done
  log "$(promtool --version 2>&1 | head -1)"
}

kube_apiserver() {
  local out="$CACHE_DIR/kube-apiserver-$KUBE_VERSION"
  if [ -x "$out" ]; then
    log "kube-apiserver cached: $out"
    return 0
  fi
  log "building kube-apiserver $KUBE_VERSION (about 5-10 minutes on 2 cores; once per machine)"
  KUBE_VERSION="$KUBE_VERSION" KUBE2RA_CACHE="$CACHE_DIR" "$HACK_DIR/build-kube.sh" kube-apiserver >/dev/null
}

kube_node() {
  local c missing=()
  for c in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy; do
    [ -x "$CACHE_DIR/$c-$KUBE_VERSION" ] || missing+=("$c")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "kube node binaries cached in $CACHE_DIR"
    return 0
  fi
  log "building ${missing[*]} $KUBE_VERSION (about 10 minutes on 2 cores; once per machine)"
  KUBE_VERSION="$KUBE_VERSION" KUBE2RA_CACHE="$CACHE_DIR" "$HACK_DIR/build-kube.sh" "${missing[@]}" >/dev/null
}

check_node_tools() {
  local t
  for t in containerd ctr runc buildah mmdebstrap nsenter docker-registry skopeo; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is not on PATH after installing ${NODE_PACKAGES[*]}"; return 1; }
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] ||
    { log "/usr/lib/cni/bridge or host-local missing: apt-get install containernetworking-plugins"; return 1; }
  # The token-door scenario copies python3's boto3 into the client image
  # (Debian's 1.26 cannot speak EKS Pod Identity); cluster-images.sh falls
  # back to pip when it is older than 1.34.
  local boto3; boto3=$(python3 -c 'import boto3; print(boto3.__version__)' 2>/dev/null || echo none)
  if [ "$boto3" = none ] || [ "$(printf '%s\n' 1.34 "$boto3" | sort -V | head -1)" != 1.34 ]; then
    log "python3's boto3 is $boto3: make e2e-cluster will pip install boto3>=1.34 for its client image (needs a package index)"
  fi
}

# check_release_tools: arm64 binaries run here, through qemu-user-static in
# binfmt_misc (mounted and the handler enabled when a container or a
# machine without systemd-binfmt left them off).
check_release_tools() {
  local t
  for t in buildah mmdebstrap skopeo jq qemu-aarch64-static update-binfmts; do
    command -v "$t" >/dev/null 2>&1 || { log "$t is not on PATH after installing ${RELEASE_PACKAGES[*]}"; return 1; }
  done
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
      { log "cannot mount binfmt_misc: make release cannot run the arm64 image's runtime stage"; return 1; }
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || as_root update-binfmts --enable qemu-aarch64 ||
    { log "update-binfmts --enable qemu-aarch64 failed"; return 1; }
  grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    { log "qemu-aarch64's binfmt_misc entry lacks the F flag: builds in a chroot cannot find the emulator"; return 1; }
  log "arm64 binaries run through $(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
}

# go_tool NAME PACKAGE MODULE VERSION: installs PACKAGE@VERSION into BIN_DIR
# unless the binary there was already built from MODULE at VERSION.
go_tool() {
  local name="$1" pkg="$2" module="$3" version="$4"
  local bin="$BIN_DIR/$name"
  if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -qE "^\s+mod\s+$module\s+$version\s"; then
    log "$name $version present: $bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "go is not on PATH; install Go 1.26"; return 1; }
  log "installing $name $version with go install (a minute or two)"
  mkdir -p "$BIN_DIR"
  # GOFLAGS from the environment (e.g. -mod=vendor) must not leak into this.
  GOFLAGS= GOBIN="$BIN_DIR" go install "$pkg@$version" ||
    { log "go install $pkg@$version failed"; return 1; }
}

# js_sdk installs hack/js-sdk's locked packages into JS_SDK_DIR (named for
# the pinned @aws-sdk/credential-providers version, which test/harness
# reads from the same package.json) unless the same lockfile is already
# installed there. npm ci verifies every package's integrity hash.
js_sdk() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_packages "${JS_PACKAGES[@]}" || return 1
  fi
  local src="$HACK_DIR/js-sdk"
  local need have version
  need=$(node -p 'require(process.argv[1]).packages["node_modules/@aws-sdk/credential-providers"].engines.node' "$src/package-lock.json") ||
    { log "cannot read the node version $src/package-lock.json needs"; return 1; }
  have=$(node --version)
  if ! node -e 'const [m] = process.versions.node.split("."); const need = process.argv[1].match(/\d+/)[0]; process.exit(Number(m) >= Number(need) ? 0 : 1)' "$need"; then
    log "node $have is older than the $need the pinned AWS SDK for JavaScript needs (Debian 12 ships 18):"
    log "install nodejs 20 or later (Debian 13, or NodeSource's nodejs package) and run this again"
    return 1
  fi
  version=$(node -p 'require(process.argv[1]).dependencies["@aws-sdk/credential-providers"]' "$src/package.json") ||
    { log "cannot read the pinned version from $src/package.json"; return 1; }
  local dir="$CACHE_DIR/npm/aws-sdk-js-v3-$version"
  if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/installed-package-lock.json"; then
    log "AWS SDK for JavaScript v3 $version present: $dir (node $have)"
    return 0
  fi
  log "installing the AWS SDK for JavaScript v3 $version with npm ci into $dir (node $have)"
  mkdir -p "$CACHE_DIR/npm"
  local tmp; tmp=$(mktemp -d "$CACHE_DIR/npm/.install.XXXXXX")
  cp "$src/package.json" "$src/package-lock.json" "$tmp/"
  # --ignore-scripts: nothing from the registry runs at install time.
  if ! (cd "$tmp" && npm_config_cache="$CACHE_DIR/npm/_cache" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2); then
    rm -rf "$tmp"
    log "npm ci in $src's lockfile failed (is https://registry.npmjs.org reachable?)"
    return 1
  fi
  cp "$src/package-lock.json" "$tmp/installed-package-lock.json"
  rm -rf "$dir"
  mv "$tmp" "$dir"
}

usage() {
  echo "usage: $0 [all|demo|packages|kube-apiserver|kube-node|tools|js-sdk|prometheus|registry|release]..." >&2
  echo "  all (default)   everything below but demo, which is a subset" >&2
  echo "  demo            what make demo uses: ${DEMO_PACKAGES[*]}, kube-apiserver $KUBE_VERSION and helm $HELM_VERSION" >&2
  echo "  packages        Debian packages, and a check that both iptables backends work" >&2
  echo "  kube-apiserver  build and cache kube-apiserver $KUBE_VERSION" >&2
  echo "  kube-node       ${NODE_PACKAGES[*]}, and kubelet, kube-controller-manager, kube-scheduler, kube-proxy $KUBE_VERSION" >&2
  echo "  release         ${RELEASE_PACKAGES[*]}, and qemu-aarch64 enabled in binfmt_misc" >&2
  echo "  tools           helm $HELM_VERSION and staticcheck $STATICCHECK_VERSION in $BIN_DIR" >&2
  echo "  prometheus      ${PROMETHEUS_PACKAGES[*]} (prometheus and promtool: the alert rules' tests, test/e2e's scrape check)" >&2
  echo "  registry        ${REGISTRY_PACKAGES[*]} (test/chart pushes the packaged chart to it and installs it from oci://)" >&2
  echo "  js-sdk          the AWS SDK for JavaScript v3 from hack/js-sdk/package-lock.json in $CACHE_DIR/npm (and ${JS_PACKAGES[*]} if node is missing)" >&2
}

main() {
  local start; start=$(now_ms)
  local parts=("$@")
  [ ${#parts[@]} -gt 0 ] || parts=(all)
  local part
  for part in "${parts[@]}"; do
    case "$part" in
      all|demo|packages|kube-apiserver|kube-node|tools|js-sdk|prometheus|registry|release) ;;
      -h|--help) usage; exit 0 ;;
      *) usage; fail "unknown part '$part'" ;;
    esac
  done
  want() { local p; for p in "${parts[@]}"; do [ "$p" = all ] || [ "$p" = "$1" ] && return 0; done; return 1; }
  # demo is a subset of all: packages covers its Debian packages.
  if want demo && ! want packages; then
    log "make demo needs ${DEMO_PACKAGES[*]} (the API server's etcd, the node's iptables and network namespaces, the pods' curl), kube-apiserver and helm (to render the chart's ClusterRole); the test tiers' other parts are installed by make test"
    step "demo Debian packages" apt_packages "${DEMO_PACKAGES[@]}"
    step "demo tool check" check_demo_tools
  fi
  if want packages; then
    step "Debian packages" apt_packages
    step "tool check" check_tools
  fi
  if want kube-apiserver || want demo; then
    step "kube-apiserver $KUBE_VERSION" kube_apiserver
  fi
  if want kube-node; then
    step "node Debian packages" apt_packages "${NODE_PACKAGES[@]}"
    step "node tool check" check_node_tools
    step "kube node $KUBE_VERSION" kube_node
  fi
  if want release; then
    step "release Debian packages" apt_packages "${RELEASE_PACKAGES[@]}"
    step "release tool check" check_release_tools
  fi
  if want tools || want demo; then
    step "helm $HELM_VERSION" go_tool helm helm.sh/helm/v3/cmd/helm helm.sh/helm/v3 "$HELM_VERSION"
  fi
  if want tools; then
    step "staticcheck $STATICCHECK_VERSION" go_tool staticcheck honnef.co/go/tools/cmd/staticcheck honnef.co/go/tools "$STATICCHECK_VERSION"
  fi
  if want prometheus; then
    step "prometheus Debian packages" apt_packages "${PROMETHEUS_PACKAGES[@]}"
    step "prometheus tool check" check_prometheus_tools
  fi
  if want registry; then
    step "registry Debian packages" apt_packages "${REGISTRY_PACKAGES[@]}"
    step "registry tool check" check_registry_tools
  fi
  if want js-sdk; then
    step "AWS SDK for JavaScript v3" js_sdk
  fi
  printf 'install-test-deps: %-28s %6ss\n' "total" "$(elapsed "$start")" >&2
  log "tools are in $BIN_DIR (add it to PATH) and $CACHE_DIR"
}

main "$@"
