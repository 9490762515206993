package cniresults

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/k8s"
)

// containerdEntry is an entry as containerd 1.6 writes it through libcni
// (captured from the real-node tier, config and DNS left out), for the
// pod network's eth0 and the given addresses.
func containerdEntry(ns, name, uid string, addrs ...string) string {
	ips := ""
	for i, a := range addrs {
		if i > 0 {
			ips += ","
		}
		ips += fmt.Sprintf(`{"address":%q,"gateway":"10.232.0.1","interface":2}`, a)
	}
	return `{"kind":"cniCacheV1","containerId":"0d42","ifName":"eth0","networkName":"k2rc",` +
		`"cniArgs":[["K8S_POD_INFRA_CONTAINER_ID","0d42"],["K8S_POD_UID",` + fmt.Sprintf("%q", uid) + `],["IgnoreUnknown","1"],` +
		`["K8S_POD_NAMESPACE",` + fmt.Sprintf("%q", ns) + `],["K8S_POD_NAME",` + fmt.Sprintf("%q", name) + `]],` +
		`"result":{"cniVersion":"0.4.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/var/run/netns/cni-1"}],` +
		`"ips":[` + ips + `]}}`
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		entry   string
		want    *k8s.SandboxClaim
		wantErr bool
	}{
		{name: "a pod network's entry names the pod and its addresses",
			entry: containerdEntry("apps", "web", "uid-1", "10.232.0.5/28", "fd00::5/64"),
			want:  &k8s.SandboxClaim{Namespace: "apps", Name: "web", UID: "uid-1", SandboxID: "0d42", IPs: []netip.Addr{netip.MustParseAddr("10.232.0.5"), netip.MustParseAddr("fd00::5")}}},
		{name: "the runtime's loopback network gives no pod address",
			entry:   containerdEntry("apps", "web", "uid-1", "127.0.0.1/8", "::1/128"),
			wantErr: true},
		{name: "link-local addresses are no pod's source",
			entry: containerdEntry("apps", "web", "uid-1", "169.254.1.2/16", "fe80::1/64", "10.232.0.6/28"),
			want:  &k8s.SandboxClaim{Namespace: "apps", Name: "web", UID: "uid-1", SandboxID: "0d42", IPs: []netip.Addr{netip.MustParseAddr("10.232.0.6")}}},
		{name: "an entry without the pod's UID is not used (a runtime that does not pass it)",
			entry:   `{"kind":"cniCacheV1","cniArgs":[["K8S_POD_NAMESPACE","apps"],["K8S_POD_NAME","web"]],"result":{"ips":[{"address":"10.232.0.5/28"}]}}`,
			wantErr: true},
		{name: "another kind of file is not used",
			entry:   `{"kind":"somethingElse","cniArgs":[["K8S_POD_NAMESPACE","apps"],["K8S_POD_NAME","web"],["K8S_POD_UID","u"]],"result":{"ips":[{"address":"10.232.0.5/28"}]}}`,
			wantErr: true},
		{name: "a torn or foreign file is not used",
			entry:   `{"kind":"cniCacheV1","cniArgs":[["K8S_POD_`,
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.entry))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Parse = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Namespace != tt.want.Namespace || got.Name != tt.want.Name || got.UID != tt.want.UID || got.SandboxID != tt.want.SandboxID || !slices.Equal(got.IPs, tt.want.IPs) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// waitFor polls c until cond holds, woken by its Changes channel, for at
// most ten seconds.
func waitFor(t *testing.T, c *Cache, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := c.Changes()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the cache never saw %s", what)
		}
	}
}

// TestCacheFollowsTheRuntimesWrites: entries already there are read at
// start; an entry the runtime writes later is seen and wakes waiters; a
// removed entry (the sandbox's DEL) is forgotten; two sandboxes claiming
// one address are both returned, for the caller to refuse.
func TestCacheFollowsTheRuntimesWrites(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		// libcni writes in place; a rename is what other writers do.
		tmp := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("k2rc-old-eth0", containerdEntry("apps", "old", "uid-old", "10.232.0.4/28"))
	if err := os.WriteFile(filepath.Join(dir, "cni-loopback-old-lo"), []byte(containerdEntry("apps", "old", "uid-old", "127.0.0.1/8")), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := New(dir, nil)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	if got := c.Claims(ip("10.232.0.4")); len(got) != 1 || got[0].UID != "uid-old" {
		t.Fatalf("claims of an entry present at start: %+v", got)
	}
	if got := c.Claims(ip("127.0.0.1")); len(got) != 0 {
		t.Errorf("loopback claimed: %+v", got)
	}

	// Written in place, as libcni does (os.WriteFile): seen on close.
	if err := os.WriteFile(filepath.Join(dir, "k2rc-new-eth0"), []byte(containerdEntry("apps", "new", "uid-new", "10.232.0.5/28")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "a new entry", func() bool { return len(c.Claims(ip("10.232.0.5"))) == 1 })

	write("k2rc-twin-eth0", containerdEntry("apps", "twin", "uid-twin", "10.232.0.5/28"))
	waitFor(t, c, "a second claim on one address", func() bool { return len(c.Claims(ip("10.232.0.5"))) == 2 })

	if err := os.Remove(filepath.Join(dir, "k2rc-twin-eth0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "k2rc-old-eth0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "removed entries", func() bool {
		return len(c.Claims(ip("10.232.0.4"))) == 0 && len(c.Claims(ip("10.232.0.5"))) == 1
	})
	if got := c.Claims(ip("10.232.0.5")); got[0].UID != "uid-new" {
		t.Errorf("after the twin's removal 10.232.0.5 is claimed by %+v, want uid-new", got)
	}
}

func TestStartNamesTheDirectoryItCannotWatch(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "results")
	err := New(missing, nil).Start(context.Background())
	if err == nil {
		t.Fatal("Start on a missing directory succeeded")
	}
	if want := missing; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
}
