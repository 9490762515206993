// Package install is the agent's side of kube2ra's chained CNI plugin: it
// copies the plugin binary into the host's CNI bin directory, chains the
// plugin's entry last in the runtime's primary conflist, puts it back when
// a primary CNI rewrites that file, takes both away on uninstall, and finds
// the pods that started without the plugin's in-pod rule (repair.go).
// It imports the plugin's configuration type only; the plugin never
// imports this package.
package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/cni/plugin"
	"github.com/kube2ra/kube2ra/dirwatch"
)

// Options configure an Installer.
type Options struct {
	// Binary is the plugin in the agent's image (--cni-plugin-binary).
	Binary string
	// BinDir is the host's CNI bin directory (--cni-bin-dir).
	BinDir string
	// ConfDir is the host's CNI configuration directory (--cni-conf-dir).
	ConfDir string
	// Entry is the plugin's conflist entry, built from the agent's flags.
	Entry plugin.Config
	// Resync is how often the binary and entry are checked besides the
	// directory watch (a missed event, a binary removed).
	Resync time.Duration
	// Logger receives what changed and why; nil discards.
	Logger logrus.FieldLogger
	// Registerer receives the kube2ra_cni_* series; nil registers none.
	Registerer prometheus.Registerer
	// Clock times re-insertions; nil is the real clock.
	Clock clock.WithTicker
}

// Validate names each missing or bad option with the flag that sets it.
func (o Options) Validate() error {
	var errs []error
	for _, d := range []struct{ flag, path string }{{"--cni-plugin-binary", o.Binary}, {"--cni-bin-dir", o.BinDir}, {"--cni-conf-dir", o.ConfDir}} {
		if !filepath.IsAbs(d.path) {
			errs = append(errs, fmt.Errorf("%s %q: need an absolute path", d.flag, d.path))
		}
	}
	if err := o.Entry.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("the kube2ra-cni entry built from the agent's flags: %w", err))
	}
	if o.Resync <= 0 {
		errs = append(errs, fmt.Errorf("resync %s: need a positive interval", o.Resync))
	}
	return errors.Join(errs...)
}

// Installer keeps the plugin binary and its conflist entry in place.
type Installer struct {
	// opts are the validated options.
	opts Options
	// log receives changes.
	log logrus.FieldLogger
	// clock times re-insertions.
	clock clock.WithTicker
	// metrics are the kube2ra_cni_* series.
	metrics *metrics
	// mu serialises Ensure and Remove (the watch and shutdown).
	mu sync.Mutex
	// removed is true after Remove: the watch writes nothing more, so an
	// uninstall is not undone by the watch that sees it.
	removed bool
	// inserted receives a value after each write of the entry (capacity 1).
	inserted chan struct{}
	// placed is true once this agent has seen its entry in place: a later
	// insert is a re-insert after someone else rewrote the file.
	placed bool
}

// New validates opts and registers the metrics.
func New(opts Options) (*Installer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	i := &Installer{opts: opts, log: opts.Logger, clock: opts.Clock, metrics: m, inserted: make(chan struct{}, 1)}
	if i.log == nil {
		l := logrus.New()
		l.Out = discard{}
		i.log = l
	}
	if i.clock == nil {
		i.clock = clock.RealClock{}
	}
	return i, nil
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BinaryPath is where the plugin lives on the host.
func (i *Installer) BinaryPath() string { return filepath.Join(i.opts.BinDir, plugin.PluginType) }

// errRemoved is Ensure's answer after Remove.
var errRemoved = errors.New("the CNI plugin was removed (uninstall): not installing it again")

// Result says what one Ensure found and did.
type Result struct {
	// BinaryWritten is true when the binary was missing or different.
	BinaryWritten bool
	// Conflist is the primary configuration's path after the edit, "" when
	// the directory holds none yet.
	Conflist string
	// EntryWritten is true when the entry was missing, stale or not last.
	EntryWritten bool
	// Reinserted is true when EntryWritten follows a rewrite by someone
	// else of a file this agent had already chained itself into.
	Reinserted bool
	// Took is how long the entry was missing: from the other writer's
	// change (the file's modification time) to the rename that put it back.
	Took time.Duration
}

// Ensure installs the binary and chains the entry last in the primary
// configuration, writing only what differs. Without a configuration yet it
// installs the binary and returns a Result with no Conflist: the watch
// chains the entry when the primary CNI writes its file.
func (i *Installer) Ensure(ctx context.Context) (Result, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.removed {
		return Result{}, errRemoved
	}
	r, err := i.ensure()
	i.metrics.observe(r, err)
	if r.EntryWritten {
		select {
		case i.inserted <- struct{}{}:
		default:
		}
	}
	return r, err
}

// Inserted signals after the entry was written: pods created while it was
// missing may lack the in-pod rule (the Repairer's wake).
func (i *Installer) Inserted() <-chan struct{} { return i.inserted }

func (i *Installer) ensure() (Result, error) {
	var r Result
	var err error
	if r.BinaryWritten, err = installBinary(i.opts.Binary, i.BinaryPath()); err != nil {
		return r, err
	}
	primary, err := primaryConfig(i.opts.ConfDir)
	if err != nil || primary == "" {
		return r, err
	}
	list, st, err := readConfig(primary)
	if err != nil {
		return r, err
	}
	target := strings.TrimSuffix(primary, filepath.Ext(primary)) + ".conflist"
	r.Conflist = target
	if v, ok := list.speaksVersion(); !ok {
		return r, fmt.Errorf("not chaining kube2ra-cni into %s: its cniVersion %s is not one the plugin speaks (%s), and the runtime would refuse every pod sandbox with the entry in it; the host rules still cover the node's pods. Give the primary CNI a configuration of one of those versions", primary, v, strings.Join(plugin.Versions().SupportedVersions(), ", "))
	}
	if target == primary && list.hasExactly(i.opts.Entry) {
		i.placed = true
		return r, nil
	}
	if err := list.withEntry(i.opts.Entry); err != nil {
		return r, err
	}
	out, err := list.encode()
	if err != nil {
		return r, err
	}
	if err := writeAtomic(target, out, st.Mode().Perm()); err != nil {
		return r, fmt.Errorf("chaining kube2ra-cni into the primary CNI configuration: %w", err)
	}
	if target != primary {
		// The single-plugin file becomes a list beside it; the old file
		// goes, or it would sort first and stay the primary.
		if _, err := removeFile(primary); err != nil {
			return r, fmt.Errorf("replacing the single-plugin configuration by %s: %w", target, err)
		}
	}
	r.EntryWritten = true
	if i.placed {
		r.Reinserted = true
		r.Took = max(i.clock.Since(st.ModTime()), 0)
	}
	i.placed = true
	return r, nil
}

// Remove takes the plugin out (RemoveAll) and stops this installer for
// good: what uninstall leaves is the node as it was.
func (i *Installer) Remove() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.placed, i.removed = false, true
	i.metrics.installed.Set(0)
	return RemoveAll(i.opts.BinDir, i.opts.ConfDir)
}

// RemoveAll takes kube2ra's entry out of every configuration in confDir
// and the plugin out of binDir; directories or files already gone are no
// error. It needs no agent configuration (`kube2ra cleanup`).
func RemoveAll(binDir, confDir string) error {
	var errs []error
	entries, err := os.ReadDir(confDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("reading the CNI configuration directory %s: %w", confDir, err))
	}
	for _, e := range entries {
		if e.IsDir() || !isConfFile(e.Name()) {
			continue
		}
		if err := removeEntry(filepath.Join(confDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := removeFile(filepath.Join(binDir, plugin.PluginType)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeEntry rewrites path without kube2ra's entries, if it has any.
func removeEntry(path string) error {
	list, st, err := readConfig(path)
	if err != nil {
		// Not a configuration kube2ra could have written to.
		return nil
	}
	if !list.withoutEntry() {
		return nil
	}
	out, err := list.encode()
	if err != nil {
		return err
	}
	if err := writeAtomic(path, out, st.Mode().Perm()); err != nil {
		return fmt.Errorf("removing the kube2ra-cni entry: %w", err)
	}
	return nil
}

// Run keeps the binary and entry in place until ctx ends: it checks when
// something changes in either directory (inotify) and every Resync.
func (i *Installer) Run(ctx context.Context) {
	// Any change in either directory means a check of both: which files
	// changed does not matter (nor does a lost event, with the resync).
	var changed <-chan []string
	if w, err := dirwatch.Start(ctx, watchMask, i.opts.ConfDir, i.opts.BinDir); err != nil {
		i.log.WithError(err).Warnf("cannot watch the CNI directories: checking every %s only", i.opts.Resync)
	} else {
		changed = w.Batches()
	}
	// What changed between the caller's Ensure and the watch.
	if errors.Is(i.check(ctx), errRemoved) {
		return
	}
	ticker := i.clock.NewTicker(i.opts.Resync)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				changed = nil // the watch failed: the resync goes on
				continue
			}
			drain(changed) // one check covers every batch already read
		case <-ticker.C():
		}
		if errors.Is(i.check(ctx), errRemoved) {
			return
		}
	}
}

// watchMask is every change that can replace, rewrite or remove a file in
// the CNI directories, created files and changed modes included.
const watchMask = dirwatch.Changes | unix.IN_CREATE | unix.IN_ATTRIB

// drain takes every batch already waiting in c.
func drain(c <-chan []string) {
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// check runs Ensure and logs what it changed.
func (i *Installer) check(ctx context.Context) error {
	r, err := i.Ensure(ctx)
	if !errors.Is(err, errRemoved) {
		i.logResult(r, err)
	}
	return err
}

// logResult says what an Ensure did, with the time a re-insertion took.
func (i *Installer) logResult(r Result, err error) {
	log := i.log.WithField("conflist", r.Conflist)
	if err != nil {
		log.WithError(err).Warn("CNI plugin check failed: new pods get only the host rules until it succeeds")
		return
	}
	if r.BinaryWritten {
		log.WithField("binary", i.BinaryPath()).Info("kube2ra-cni binary installed")
	}
	switch {
	case r.Reinserted:
		log.WithField("took_ms", r.Took.Milliseconds()).Info("kube2ra-cni entry re-inserted: another writer had rewritten the primary CNI configuration without it")
	case r.EntryWritten:
		log.Info("kube2ra-cni entry chained last in the primary CNI configuration")
	case r.Conflist == "":
		log.WithField("conf_dir", i.opts.ConfDir).Info("no CNI configuration yet: the entry is chained when the primary CNI writes one")
	}
}
