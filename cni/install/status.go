package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// Status is the plugin's state on the node, read from disk: what
// `kube2ra explain --node`, /readyz and the metrics report.
type Status struct {
	// BinaryPresent is true when the plugin is in the bin directory.
	BinaryPresent bool
	// Conflist is the runtime's primary configuration, "" when none.
	Conflist string
	// Position is the index of kube2ra's entry in its plugin list, -1 when
	// absent (the first when there are several).
	Position int
	// Entries is how many kube2ra entries the list holds (1 when right).
	Entries int
	// Plugins is the list's length.
	Plugins int
	// Current is true when the one entry follows the primary plugin and is
	// as the agent writes it.
	Current bool
}

// Installed is true when the runtime will call the plugin as configured
// for every new pod sandbox.
func (s Status) Installed() bool {
	return s.BinaryPresent && s.Current && s.Entries == 1 && s.Position > 0
}

// Problem says what is missing and what puts it back, "" when installed.
func (s Status) Problem() string {
	var p []string
	if !s.BinaryPresent {
		p = append(p, "the kube2ra-cni binary is not in the CNI bin directory")
	}
	switch {
	case s.Conflist == "":
		p = append(p, "no CNI configuration in the conf directory yet (the primary CNI has not written one)")
	case s.Entries == 0:
		p = append(p, fmt.Sprintf("%s has no kube2ra-cni entry", s.Conflist))
	case s.Entries > 1:
		p = append(p, fmt.Sprintf("%s has %d kube2ra-cni entries", s.Conflist, s.Entries))
	case s.Position == 0:
		p = append(p, fmt.Sprintf("the kube2ra-cni entry in %s is its first plugin, before the primary one", s.Conflist))
	case !s.Current:
		p = append(p, fmt.Sprintf("the kube2ra-cni entry in %s differs from the agent's settings", s.Conflist))
	}
	if len(p) == 0 {
		return ""
	}
	return "CNI plugin not installed: " + strings.Join(p, "; ") + "; the agent puts it back at its next check (--cni-resync)"
}

// Inspect reads the plugin's state in binDir and confDir; want is the entry
// the agent writes (nil skips the comparison and Current is false).
func Inspect(binDir, confDir string, want *plugin.Config) (Status, error) {
	s := Status{Position: -1}
	_, err := os.Stat(filepath.Join(binDir, plugin.PluginType))
	switch {
	case err == nil:
		s.BinaryPresent = true
	case !errors.Is(err, fs.ErrNotExist):
		return s, fmt.Errorf("looking for the plugin binary: %w", err)
	}
	primary, err := primaryConfig(confDir)
	if err != nil || primary == "" {
		return s, err
	}
	s.Conflist = primary
	list, _, err := readConfig(primary)
	if err != nil {
		return s, err
	}
	p := list.place()
	s.Plugins, s.Entries = p.total, len(p.positions)
	if s.Entries > 0 {
		s.Position = p.positions[0]
	}
	if want != nil && filepath.Ext(primary) == ".conflist" {
		s.Current = list.hasExactly(*want)
	}
	return s, nil
}
