package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	clocktesting "k8s.io/utils/clock/testing"
)

const bridgeConflist = `{"cniVersion":"1.0.0","name":"bridge","plugins":[{"type":"bridge","bridge":"cni0"}]}`

// TestReinsertTimed proves a rewrite by another writer is put back and
// timed from that writer's change: the counter, the histogram and the
// Result all carry the time the entry was missing.
func TestReinsertTimed(t *testing.T) {
	i, opts := testInstaller(t, "")
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	i.metrics = m
	rewrite := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakeClock(rewrite.Add(250 * time.Millisecond))
	i.clock = clk
	path := filepath.Join(opts.ConfDir, "10-bridge.conflist")
	if err := os.WriteFile(path, []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := i.Ensure(context.Background()); err != nil || !r.EntryWritten || r.Reinserted {
		t.Fatalf("first Ensure = %+v, %v: want the entry written, not a re-insertion", r, err)
	}
	// The primary CNI restarts and writes its file anew, without kube2ra.
	if err := os.WriteFile(path, []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, rewrite, rewrite); err != nil {
		t.Fatal(err)
	}
	r, err := i.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reinserted || r.Took != 250*time.Millisecond {
		t.Errorf("Ensure after rewrite = %+v, want re-inserted, took 250ms", r)
	}
	if got := testutil.ToFloat64(m.reinserts); got != 1 {
		t.Errorf("kube2ra_cni_reinserts_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.installed); got != 1 {
		t.Errorf("kube2ra_cni_plugin_installed = %v, want 1", got)
	}
	out, err := testutil.CollectAndFormat(m.reinsertSeconds, expfmt.TypeTextPlain, "kube2ra_cni_reinsert_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "kube2ra_cni_reinsert_seconds_sum 0.25") {
		t.Errorf("histogram does not hold the 250ms re-insertion:\n%s", out)
	}
}

// TestWatchReinserts proves the directory watch, not the resync (an hour
// here), puts the entry back after another writer replaces the file by a
// rename, as install-cni scripts do, and the binary after it is deleted.
func TestWatchReinserts(t *testing.T) {
	i, opts := testInstaller(t, "")
	path := filepath.Join(opts.ConfDir, "10-bridge.conflist")
	if err := os.WriteFile(path, []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := i.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { i.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	installed := func() bool {
		st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry)
		return err == nil && st.Installed()
	}
	replace := func() {
		tmp := filepath.Join(opts.ConfDir, "tmp.new")
		if err := os.WriteFile(tmp, []byte(bridgeConflist), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	// Run's first check may catch this one; it has set up the watch
	// before, so what follows is the watch's alone.
	replace()
	waitFor("entry re-inserted after the conflist was replaced", installed)
	if err := os.Remove(i.BinaryPath()); err != nil {
		t.Fatal(err)
	}
	waitFor("binary restored after it was deleted", installed)
	replace()
	waitFor("entry re-inserted after a second replacement", installed)
}

// TestEnsureWaitsForConfig installs the binary when no configuration exists
// yet, reports it not installed, and chains the entry once one appears.
func TestEnsureWaitsForConfig(t *testing.T) {
	i, opts := testInstaller(t, "")
	r, err := i.Ensure(context.Background())
	if err != nil || r.Conflist != "" || !r.BinaryWritten {
		t.Fatalf("Ensure on an empty directory = %+v, %v", r, err)
	}
	st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry)
	if err != nil || st.Installed() || !strings.Contains(st.Problem(), "no CNI configuration") {
		t.Fatalf("Inspect = %+v %q, %v: want not installed, no configuration", st, st.Problem(), err)
	}
	if err := os.WriteFile(filepath.Join(opts.ConfDir, "10-bridge.conflist"), []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := i.Ensure(context.Background()); err != nil || !r.EntryWritten {
		t.Fatalf("Ensure after the configuration appeared = %+v, %v", r, err)
	}
}

// TestEnsureErrors names the file and the fix for what it cannot handle,
// and leaves no temporary file behind.
func TestEnsureErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		conf, want string
	}{
		"broken JSON":        {conf: `{"plugins": [`, want: "is not a JSON object"},
		"plugins not a list": {conf: `{"name":"x","plugins":{}}`, want: `"plugins" is not a list`},
		"no type":            {conf: `{"name":"x"}`, want: "neither \"plugins\" nor \"type\""},
	} {
		t.Run(name, func(t *testing.T) {
			i, opts := testInstaller(t, "")
			path := filepath.Join(opts.ConfDir, "10-x.conflist")
			if err := os.WriteFile(path, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := i.Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Ensure = %v, want an error naming %s with %q", err, path, tc.want)
			}
			if data, _ := os.ReadFile(path); string(data) != tc.conf {
				t.Errorf("the file was changed to %q", data)
			}
		})
	}
	t.Run("binary missing from the image", func(t *testing.T) {
		i, opts := testInstaller(t, "")
		if err := os.Remove(opts.Binary); err != nil {
			t.Fatal(err)
		}
		_, err := i.Ensure(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--cni-plugin-binary") {
			t.Fatalf("Ensure = %v, want an error naming --cni-plugin-binary", err)
		}
	})
}

// TestInstallBinary writes the plugin executable, atomically, only when it
// differs, and leaves no temporary file.
func TestInstallBinary(t *testing.T) {
	i, opts := testInstaller(t, "")
	dst := i.BinaryPath()
	if wrote, err := installBinary(opts.Binary, dst); err != nil || !wrote {
		t.Fatalf("first install = %v, %v", wrote, err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary: %v, mode %v; want 0755", err, st.Mode())
	}
	if wrote, err := installBinary(opts.Binary, dst); err != nil || wrote {
		t.Fatalf("second install of the same bytes = %v, %v; want no write", wrote, err)
	}
	if err := os.WriteFile(opts.Binary, []byte("#!/bin/sh\necho plugin v2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if wrote, err := installBinary(opts.Binary, dst); err != nil || !wrote {
		t.Fatalf("install of a new version = %v, %v; want a write", wrote, err)
	}
	if data, _ := os.ReadFile(dst); !strings.Contains(string(data), "v2") {
		t.Errorf("installed binary is %q, want v2", data)
	}
	entries, _ := os.ReadDir(opts.BinDir)
	if len(entries) != 1 {
		t.Errorf("bin directory holds %d files, want only the plugin", len(entries))
	}
}

// TestOptionsValidate names each bad option's flag.
func TestOptionsValidate(t *testing.T) {
	o := Options{Binary: "kube2ra-cni", BinDir: "/opt/cni/bin", ConfDir: "", Entry: testEntry(), Resync: 0}
	o.Entry.Port = 0
	err := o.Validate()
	for _, want := range []string{"--cni-plugin-binary", "--cni-conf-dir", "port is 0", "resync"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to name %s", err, want)
		}
	}
	if err := (Options{Binary: "/kube2ra-cni", BinDir: "/opt/cni/bin", ConfDir: "/etc/cni/net.d", Entry: testEntry(), Resync: time.Second}).Validate(); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// TestRemoveStopsTheWatch proves an uninstall is final: the watch that
// sees the entry and binary go does not put them back.
func TestRemoveStopsTheWatch(t *testing.T) {
	i, opts := testInstaller(t, "")
	path := filepath.Join(opts.ConfDir, "10-bridge.conflist")
	if err := os.WriteFile(path, []byte(bridgeConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { i.Run(ctx); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry); err == nil && st.Installed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not install the plugin within 10s")
		}
	}
	if err := i.Remove(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Remove")
	}
	st, err := Inspect(opts.BinDir, opts.ConfDir, &opts.Entry)
	if err != nil || st.BinaryPresent || st.Entries != 0 {
		t.Errorf("after Remove: %+v, %v; want no binary and no entry", st, err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), `"bridge"`) {
		t.Errorf("the primary configuration lost its own plugin: %s", data)
	}
}
