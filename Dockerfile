# kube2ra node agent image: a static Go binary on Debian slim with both
# iptables backends (iptables-nft and iptables-legacy) and Debian's CA bundle
# (the agent verifies AWS's TLS certificates with it), and nothing else.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t kube2ra:dev .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the builder runs on the build machine's platform and cross-compiles), or
# `make release` (buildah, one OCI index; hack/release.sh).

# Both base images are build arguments. Users with a registry keep the
# defaults; hack/cluster-images.sh (the real-node test tier) points them at
# bases made locally from the Debian mirror (mmdebstrap) and this machine's Go
# toolchain, so the tested image is built from this very file:
#   buildah bud --network host --build-arg GO_IMAGE=localhost/...golang \
#               --build-arg RUNTIME_IMAGE=localhost/...debian -t kube2ra:dev .
# GO_IMAGE needs go on PATH and GOPATH=/go; RUNTIME_IMAGE must be Debian
# (bookworm) with apt reaching a mirror, for the iptables package.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# BuildKit sets these; buildah (1.28, Debian 12) does not and needs them as
# --build-arg (hack/release.sh), else both stages use --platform's.
ARG BUILDPLATFORM
ARG TARGETPLATFORM

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
# Debian's CA bundle, which the runtime stage copies: the agent verifies
# AWS's endpoints with it (Go reads /etc/ssl/certs/ca-certificates.crt).
# The golang image has it; a minimal Debian base gets it from the mirror. The
# bundle is the same file on every architecture, so it comes from this stage,
# and the runtime image gets no openssl with it.
RUN [ -s /etc/ssl/certs/ca-certificates.crt ] \
 || { apt-get update && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; }
WORKDIR /src
# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/kube2ra ./cmd/kube2ra \
 && CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/kube2ra-cni ./cmd/kube2ra-cni

FROM --platform=$TARGETPLATFORM ${RUNTIME_IMAGE}
# iptables brings /usr/sbin/iptables-nft and /usr/sbin/iptables-legacy (and the
# ip6tables pair); the agent picks the one the host's rules live in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/*
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kube2ra /kube2ra
# The chained CNI plugin: the agent copies it into the host's CNI bin
# directory, where the container runtime runs it (on the host, with the
# host's iptables) for every pod sandbox. Static, so it needs nothing of this
# image.
COPY --from=build /out/kube2ra-cni /kube2ra-cni

ARG VERSION=dev
ARG COMMIT=unknown
ARG CREATED=""
ARG RUNTIME_IMAGE
LABEL org.opencontainers.image.title="kube2ra" \
      org.opencontainers.image.description="Per-pod AWS IAM roles on any Kubernetes cluster: IMDS for pods, credentials from IAM Roles Anywhere or STS" \
      org.opencontainers.image.source="https://github.com/kube2ra/kube2ra" \
      org.opencontainers.image.url="https://github.com/kube2ra/kube2ra" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# Non-root by default: `kube2ra version`, `credentials` and `run --iptables=false`
# need nothing more. Managing the DNAT rule needs uid 0 with NET_ADMIN and NET_RAW
# (Kubernetes grants no ambient capabilities to other users); the Helm chart asks
# for exactly that in the pod's securityContext, with every other capability dropped.
USER 65532:65532
ENTRYPOINT ["/kube2ra"]
CMD ["run"]
