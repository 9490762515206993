package install

import (
	"context"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

var update = flag.Bool("update", false, "rewrite the want/ directories of testdata from the current output")

// testEntry is the entry every golden case chains: token door on, nft.
func testEntry() plugin.Config {
	return plugin.Config{
		Type:            plugin.PluginType,
		NodeIP:          netip.MustParseAddr("10.0.0.5"),
		Port:            8181,
		Redirect:        []netip.AddrPort{netip.MustParseAddrPort("169.254.169.254:80"), netip.MustParseAddrPort("169.254.170.23:80")},
		IPTablesBackend: "nft",
	}
}

// testInstaller is an installer over fresh bin and conf directories, the
// conf directory filled from in (a testdata directory, or none).
func testInstaller(t *testing.T, in string) (*Installer, Options) {
	t.Helper()
	root := t.TempDir()
	opts := Options{
		Binary:  filepath.Join(root, "image", plugin.PluginType),
		BinDir:  filepath.Join(root, "bin"),
		ConfDir: filepath.Join(root, "net.d"),
		Entry:   testEntry(),
		Resync:  3600e9,
	}
	for _, d := range []string{filepath.Dir(opts.Binary), opts.BinDir, opts.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(opts.Binary, []byte("#!/bin/sh\necho plugin v1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if in != "" {
		copyDir(t, in, opts.ConfDir)
	}
	i, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return i, opts
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// compareDir fails unless dir holds exactly the files of want, byte for
// byte; with -update it rewrites want from dir.
func compareDir(t *testing.T, dir, want string) {
	t.Helper()
	if *update {
		if err := os.RemoveAll(want); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(want, 0o755); err != nil {
			t.Fatal(err)
		}
		copyDir(t, dir, want)
		return
	}
	got := readDir(t, dir)
	exp := readDir(t, want)
	for name, data := range exp {
		if g, ok := got[name]; !ok {
			t.Errorf("%s is missing", name)
		} else if g != data {
			t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, filepath.Join(want, name), g, data)
		}
	}
	for name := range got {
		if _, ok := exp[name]; !ok {
			t.Errorf("unexpected file %s:\n%s", name, got[name])
		}
	}
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(data)
	}
	return m
}

// TestEnsureGolden chains the entry into each testdata/golden/*/in and
// compares the whole directory with want: the entry ends up once and last,
// the other plugins and keys as they were, a single-plugin .conf becomes a
// .conflist in its place, and only the runtime's primary file is touched.
func TestEnsureGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/golden/*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			i, opts := testInstaller(t, filepath.Join(dir, "in"))
			r, err := i.Ensure(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !r.EntryWritten || r.Reinserted {
				t.Errorf("first Ensure = %+v, want the entry written, not counted as a re-insertion", r)
			}
			compareDir(t, opts.ConfDir, filepath.Join(dir, "want"))
			st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Installed() || st.Problem() != "" {
				t.Errorf("after Ensure Inspect = %+v (%s), want installed", st, st.Problem())
			}
			// A second pass finds everything in place and writes nothing.
			before := readDir(t, opts.ConfDir)
			r, err = i.Ensure(context.Background())
			if err != nil || r.EntryWritten || r.BinaryWritten {
				t.Errorf("second Ensure = %+v, %v: want nothing written", r, err)
			}
			if after := readDir(t, opts.ConfDir); len(after) != len(before) {
				t.Errorf("second Ensure changed the directory: %v", after)
			}
		})
	}
}

// TestRemoveGolden takes the entries out of every configuration in
// testdata/remove/*/in, leaves files without one byte for byte as they
// were, and removes the binary.
func TestRemoveGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/remove/*")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no remove cases: %v", err)
	}
	for _, dir := range cases {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			i, opts := testInstaller(t, filepath.Join(dir, "in"))
			if _, err := installBinary(opts.Binary, i.BinaryPath()); err != nil {
				t.Fatal(err)
			}
			if err := i.Remove(); err != nil {
				t.Fatal(err)
			}
			compareDir(t, opts.ConfDir, filepath.Join(dir, "want"))
			if _, err := os.Stat(i.BinaryPath()); !os.IsNotExist(err) {
				t.Errorf("binary still there after Remove: %v", err)
			}
			// Removing again is no error.
			if err := i.Remove(); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

// TestEnsureRewritesAnEntryWhoseRefusalsChanged: an entry written without
// the IPv6 refusals (an older agent's) is rewritten with them, and the
// rewritten entry, "refuse" key and all, is then left alone.
func TestEnsureRewritesAnEntryWhoseRefusalsChanged(t *testing.T) {
	cases, _ := filepath.Glob("testdata/golden/*")
	if len(cases) == 0 {
		t.Fatal("no golden cases")
	}
	i, opts := testInstaller(t, filepath.Join(cases[0], "in"))
	if _, err := i.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	opts.Entry.Refuse = []netip.AddrPort{netip.MustParseAddrPort("[fd00:ec2::254]:80")}
	next, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := next.Ensure(context.Background()); err != nil || !r.EntryWritten {
		t.Fatalf("Ensure with refusals added = %+v, %v: want the entry rewritten", r, err)
	}
	if st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry); err != nil || !st.Installed() || st.Problem() != "" {
		t.Fatalf("after the rewrite Inspect = %+v, %v", st, err)
	}
	if r, err := next.Ensure(context.Background()); err != nil || r.EntryWritten {
		t.Fatalf("a second Ensure = %+v, %v: want nothing written", r, err)
	}
}

// TestEnsureLeavesAnEntryAnotherChainedPluginFollows: a current entry
// after the primary plugin stays where it is when another chained plugin
// comes after it (linkerd-cni re-appends itself last whenever the file
// changes: moving kube2ra's entry back to the end each time would trade
// places with it for ever).
func TestEnsureLeavesAnEntryAnotherChainedPluginFollows(t *testing.T) {
	i, opts := testInstaller(t, "")
	entry, err := json.Marshal(opts.Entry)
	if err != nil {
		t.Fatal(err)
	}
	conf := `{"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}, ` + string(entry) + `, {"type": "linkerd-cni"}]}`
	path := filepath.Join(opts.ConfDir, "10-calico.conflist")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := i.Ensure(context.Background())
	if err != nil || r.EntryWritten {
		t.Fatalf("Ensure = %+v, %v: want nothing written", r, err)
	}
	if got, _ := os.ReadFile(path); string(got) != conf {
		t.Fatalf("the configuration changed:\n%s", got)
	}
	if st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry); err != nil || !st.Installed() || st.Problem() != "" {
		t.Fatalf("Inspect = %+v (%s), %v: want installed", st, st.Problem(), err)
	}
}

// TestEnsureRefusesAListOfAnOldCNIVersion: a primary list of a CNI version
// kube2ra-cni does not speak (0.2.0, or none: 0.1.0) is left as it is with
// an error naming the version, since the entry would make the runtime
// refuse every ADD and DEL of the node; the 1.1.0 spec's cniVersions is
// enough on its own.
func TestEnsureRefusesAListOfAnOldCNIVersion(t *testing.T) {
	for name, tc := range map[string]struct {
		version string
		refused bool
	}{
		"0.2.0":                  {`"cniVersion": "0.2.0", `, true},
		"none":                   {``, true},
		"0.3.1":                  {`"cniVersion": "0.3.1", `, false},
		"cniVersions 1.1.0 only": {`"cniVersions": ["1.0.0", "1.1.0"], `, false},
	} {
		t.Run(name, func(t *testing.T) {
			i, opts := testInstaller(t, "")
			conf := `{` + tc.version + `"name": "k8s-pod-network", "plugins": [{"type": "calico"}]}`
			path := filepath.Join(opts.ConfDir, "10-calico.conflist")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := i.Ensure(context.Background())
			if !tc.refused {
				if err != nil || !r.EntryWritten {
					t.Fatalf("Ensure = %+v, %v: want the entry written", r, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "cniVersion") || r.EntryWritten {
				t.Fatalf("Ensure = %+v, %v: want an error naming the cniVersion and nothing written", r, err)
			}
			if got, _ := os.ReadFile(path); string(got) != conf {
				t.Fatalf("the configuration changed:\n%s", got)
			}
		})
	}
}
