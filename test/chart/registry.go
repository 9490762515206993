package chart

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kube2ra/kube2ra/test/syncbuf"
)

// registryStartTimeout bounds the wait for the registry's /v2/ to answer.
const registryStartTimeout = 30 * time.Second

// Registry is a real OCI registry (Debian's docker-registry, the CNCF
// distribution registry), plain HTTP, no authentication.
type Registry struct {
	// Host is host:port, as in oci://Host/charts.
	Host string
	// cmd is the running registry.
	cmd *exec.Cmd
	// log holds its output, for failures.
	log *syncbuf.Buffer
	// done is closed when the process has exited.
	done chan struct{}
}

// StartRegistry runs docker-registry with its storage in dir on a free port
// of ip (127.0.0.1, or the address nodes reach) and waits until it answers. It fails when docker-registry
// is not on PATH: hack/install-test-deps.sh registry installs it.
func StartRegistry(ctx context.Context, dir, ip string) (*Registry, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry is not on PATH; run hack/install-test-deps.sh registry (Debian's docker-registry): %w", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, err
	}
	host := l.Addr().String()
	l.Close()
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "storage"), host)
	configPath := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	r := &Registry{Host: host, log: &syncbuf.Buffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(bin, "serve", configPath)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting docker-registry: %w", err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, registryStartTimeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("docker-registry exited at start:\n%s", r.log.String())
		case <-ctx.Done():
			r.Stop()
			return nil, errors.Join(fmt.Errorf("docker-registry did not answer /v2/ within %s:\n%s", registryStartTimeout, r.log.String()), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends the registry and waits for it.
func (r *Registry) Stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Log is the registry's output so far.
func (r *Registry) Log() string { return r.log.String() }
