// Package cniresults reads the container runtime's CNI result cache (libcni's
// <cacheDir>/results, /var/lib/cni/results by default; containerd and
// CRI-O both write it): for every pod sandbox, the pod's namespace, name
// and UID (the K8S_POD_* CNI arguments) and the addresses the network
// gave it. The runtime writes an entry when the sandbox's network is up,
// before any container of the pod starts, while the kubelet reports the
// pod's IP to the API server only on its next status sync, up to a second
// later. The agent uses it to know a brand-new pod's IP at its first
// request; the API server stays the authority (see k8s.SandboxIPs).
package cniresults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/dirwatch"
	"github.com/kube2ra/kube2ra/k8s"
)

// DefaultDir is libcni's result cache on the host.
const DefaultDir = "/var/lib/cni/results"

// ResyncInterval is how often the whole directory is read again whatever
// inotify reported: a lost event (a full queue) is repaired within it.
const ResyncInterval = 30 * time.Second

// maxEntryBytes bounds one entry read; libcni's are a few KiB.
const maxEntryBytes = 1 << 20

// entry is the part of a libcni cache entry ("kind": "cniCacheV1") read.
type entry struct {
	// Kind is "cniCacheV1".
	Kind string `json:"kind"`
	// ContainerID is the sandbox's ID.
	ContainerID string `json:"containerId"`
	// CNIArgs are the runtime's CNI_ARGS as pairs (K8S_POD_NAMESPACE, ...).
	CNIArgs [][2]string `json:"cniArgs"`
	// Result is the network's result (any CNI version: ips[].address).
	Result struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	} `json:"result"`
}

// Cache is the sandboxes of the runtime's result cache by address. It
// implements k8s.SandboxIPs.
type Cache struct {
	// dir is the result cache directory.
	dir string
	// log receives what cannot be read.
	log logrus.FieldLogger
	// mu guards files, byIP and changed.
	mu sync.Mutex
	// files is each entry file's sandbox (nil: not a pod's, or unreadable).
	files map[string]*k8s.SandboxClaim
	// byIP is the sandboxes claiming each address.
	byIP map[netip.Addr][]*k8s.SandboxClaim
	// changed is closed and replaced on every change.
	changed chan struct{}
}

var _ k8s.SandboxIPs = (*Cache)(nil)

// New builds a Cache of dir; Start fills it.
func New(dir string, log logrus.FieldLogger) *Cache {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	return &Cache{dir: dir, log: log, files: map[string]*k8s.SandboxClaim{}, byIP: map[netip.Addr][]*k8s.SandboxClaim{}, changed: make(chan struct{})}
}

// Start reads the directory and follows it (inotify, and a full read every
// ResyncInterval) until ctx ends. It fails when the directory cannot be
// watched or read.
func (c *Cache) Start(ctx context.Context) error {
	w, err := dirwatch.Start(ctx, dirwatch.Changes, c.dir)
	if err != nil {
		return fmt.Errorf("watching the CNI result cache %s (mount the host's result cache there, or set --cni-results-dir=\"\" to go without it): %w", c.dir, err)
	}
	// Read after the watch is set, so no entry falls between the two.
	if err := c.resync(); err != nil {
		return err
	}
	go c.follow(ctx, w)
	return nil
}

// follow applies the watch's events until ctx ends.
func (c *Cache) follow(ctx context.Context, w *dirwatch.Watch) {
	batches := w.Batches()
	tick := time.NewTicker(ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case batch, ok := <-batches:
			if !ok {
				if err := w.Err(); err != nil {
					c.log.WithError(err).Warn("following the CNI result cache failed; reading the directory every " + ResyncInterval.String())
				}
				batches = nil
				continue
			}
			for _, name := range batch {
				if name == "" { // the directory itself, or an overflow
					c.logResync()
					continue
				}
				c.update(name)
			}
		case <-tick.C:
			c.logResync()
		}
	}
}

// logResync reads the whole directory again and logs a failure.
func (c *Cache) logResync() {
	if err := c.resync(); err != nil {
		c.log.WithError(err).Warn("reading the CNI result cache failed; keeping what was read")
	}
}

// resync reads every entry of the directory again.
func (c *Cache) resync() error {
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("reading the CNI result cache %s (the agent must run as root to read the runtime's 0600 files): %w", c.dir, err)
	}
	files := make(map[string]*k8s.SandboxClaim, len(des))
	for _, de := range des {
		if de.Type().IsRegular() {
			files[de.Name()] = c.read(de.Name())
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files = files
	c.reindex()
	return nil
}

// update reads one entry again (gone: forgotten).
func (c *Cache) update(name string) {
	claim := c.read(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if claim == nil {
		if _, ok := c.files[name]; !ok {
			return
		}
		delete(c.files, name)
	} else {
		c.files[name] = claim
	}
	c.reindex()
}

// reindex rebuilds byIP and wakes the waiters; c.mu held.
func (c *Cache) reindex() {
	byIP := map[netip.Addr][]*k8s.SandboxClaim{}
	for _, claim := range c.files {
		if claim == nil {
			continue
		}
		for _, ip := range claim.IPs {
			byIP[ip] = append(byIP[ip], claim)
		}
	}
	c.byIP = byIP
	close(c.changed)
	c.changed = make(chan struct{})
}

// read parses one entry; nil when it is gone, unreadable or not a pod
// sandbox's (the runtime's loopback network, an entry without the pod's
// UID).
func (c *Cache) read(name string) *k8s.SandboxClaim {
	f, err := os.Open(filepath.Join(c.dir, name))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.WithError(err).WithField("file", name).Debug("CNI result cache entry unreadable")
		}
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxEntryBytes))
	if err != nil {
		return nil
	}
	claim, err := Parse(b)
	if err != nil {
		c.log.WithError(err).WithField("file", name).Debug("CNI result cache entry not used")
		return nil
	}
	return claim
}

// Parse reads one libcni cache entry: the pod it names and the addresses
// its network gave it (loopback, link-local and unspecified addresses
// left out, which no pod's request comes from). It fails when the entry
// names no pod UID, namespace and name, or gives no usable address.
func Parse(b []byte) (*k8s.SandboxClaim, error) {
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("not a CNI cache entry: %w", err)
	}
	if e.Kind != "cniCacheV1" {
		return nil, fmt.Errorf("kind %q, not cniCacheV1", e.Kind)
	}
	claim := &k8s.SandboxClaim{SandboxID: e.ContainerID}
	for _, kv := range e.CNIArgs {
		switch kv[0] {
		case "K8S_POD_NAMESPACE":
			claim.Namespace = kv[1]
		case "K8S_POD_NAME":
			claim.Name = kv[1]
		case "K8S_POD_UID":
			claim.UID = types.UID(kv[1])
		}
	}
	if claim.Namespace == "" || claim.Name == "" || claim.UID == "" {
		return nil, errors.New("the entry names no pod (K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID)")
	}
	for _, a := range e.Result.IPs {
		p, err := netip.ParsePrefix(a.Address)
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() {
			continue
		}
		claim.IPs = append(claim.IPs, ip)
	}
	if len(claim.IPs) == 0 {
		return nil, errors.New("the entry gives the pod no usable address")
	}
	return claim, nil
}

// Claims returns the sandboxes whose network holds ip.
func (c *Cache) Claims(ip netip.Addr) []k8s.SandboxClaim {
	c.mu.Lock()
	defer c.mu.Unlock()
	claims := c.byIP[ip.Unmap()]
	out := make([]k8s.SandboxClaim, len(claims))
	for i, cl := range claims {
		out[i] = *cl
	}
	return out
}

// Changes returns a channel closed at the next change.
func (c *Cache) Changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
