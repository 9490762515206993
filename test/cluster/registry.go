//go:build e2ecluster

package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kube2ra/kube2ra/test/chart"
)

// Registry is the tier's OCI registry, where a user's node gets the agent's
// image and the user's helm gets the chart: Debian's docker-registry (the
// CNCF distribution registry, started as test/chart starts it) serving plain
// HTTP on the host's loopback, behind a TLS front on HostIP signed by the
// tier's CA (a registry behind a TLS-terminating load balancer). The node's
// containerd trusts that CA through its hosts.toml, helm and skopeo through
// their CA flags.
//
// The front can hold every request (Hold, Release): a new node whose
// registry is not reachable yet. A held pull waits (containerd 1.6 puts no
// deadline on a pull's requests), so it ends when Release is called and not
// after the kubelet's back-off.
type Registry struct {
	// Host is the front's host:port, the first part of every reference.
	Host string
	// CAFile is the CA that signed the front's certificate (PEM).
	CAFile string
	// CertDir holds CAFile as ca.crt, for skopeo's --dest-cert-dir.
	CertDir string
	// backend is docker-registry; server is the front.
	backend *chart.Registry
	server  *http.Server
	// mu guards open, which is closed while requests may pass.
	mu   sync.Mutex
	open chan struct{}
}

// StartRegistry starts docker-registry and its TLS front on HostIP (any
// port), and writes the node containerd's hosts.toml for it.
func StartRegistry(ctx context.Context, tlsConfig *tls.Config, caPEM []byte) (_ *Registry, err error) {
	root := dir("registry")
	r := &Registry{CertDir: filepath.Join(root, "certs"), open: make(chan struct{})}
	close(r.open)
	r.CAFile = filepath.Join(r.CertDir, "ca.crt")
	if err := os.MkdirAll(r.CertDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.CAFile, caPEM, 0o600); err != nil {
		return nil, err
	}
	// Only the front reaches it.
	if r.backend, err = chart.StartRegistry(ctx, root, "127.0.0.1"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()

	target := &url.URL{Scheme: "http", Host: r.backend.Host}
	front := &httputil.ReverseProxy{
		// The registry writes upload locations from the Host and
		// X-Forwarded-Proto it is given: the front's, as a load balancer's.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
	}
	ln, err := net.Listen("tcp", HostIP+":0")
	if err != nil {
		return nil, err
	}
	r.Host = ln.Addr().String()
	r.server = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.mu.Lock()
			open := r.open
			r.mu.Unlock()
			select {
			case <-open:
			case <-req.Context().Done():
				return
			}
			front.ServeHTTP(w, req)
		}),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = r.server.ServeTLS(ln, "", "") }()

	if err := waitFor(ctx, "docker-registry answering /v2/ through its front", 30*time.Second, nil, func() error {
		_, err := run(ctx, "curl", "-sf", "--max-time", "2", "--cacert", r.CAFile, "https://"+r.Host+"/v2/")
		return err
	}); err != nil {
		return nil, fmt.Errorf("%w; docker-registry's log:\n%s", err, r.backend.Log())
	}
	// The node's containerd: the registry's CA, the way a user's node
	// trusts a private registry (config_path in containerd's config).
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n",
		"https://"+r.Host, "https://"+r.Host, r.CAFile)
	hostsFile := dir("containerd", "certs.d", r.Host, "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(hostsFile), 0o700); err != nil {
		return nil, err
	}
	return r, os.WriteFile(hostsFile, []byte(hosts), 0o600)
}

// Hold makes every request to the registry wait until Release.
func (r *Registry) Hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.open:
		r.open = make(chan struct{})
	default:
	}
}

// Release lets held and new requests through.
func (r *Registry) Release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.open:
	default:
		close(r.open)
	}
}

// Stop stops the front and docker-registry.
func (r *Registry) Stop() {
	if r.server != nil {
		r.Release()
		_ = r.server.Close()
	}
	if r.backend != nil {
		r.backend.Stop()
	}
}

// PushImage copies an image archive (oci-archive) to repository:tag in the
// registry with skopeo, as a user publishes an image, and returns the
// manifest digest the registry stored.
func (r *Registry) PushImage(ctx context.Context, archive, repository, tag string) (string, error) {
	digestFile := filepath.Join(dir("registry"), "digest-"+tag)
	if _, err := run(ctx, "skopeo", "copy", "--quiet", "--dest-cert-dir", r.CertDir, "--digestfile", digestFile,
		"oci-archive:"+archive, "docker://"+r.Host+"/"+repository+":"+tag); err != nil {
		return "", fmt.Errorf("pushing %s to the registry (skopeo: apt-get install skopeo): %w", archive, err)
	}
	b, err := os.ReadFile(digestFile)
	if err != nil {
		return "", err
	}
	digest := strings.TrimSpace(string(b))
	if !strings.HasPrefix(digest, "sha256:") {
		return "", errors.New("skopeo wrote no sha256 digest for " + archive + ": " + digest)
	}
	return digest, nil
}
