package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/kube2ra/kube2ra/cni/plugin"
)

// confExtensions are the files a container runtime loads from the CNI
// configuration directory (libcni.ConfFiles): the first by name is the
// primary configuration, the one every pod sandbox is created with.
var confExtensions = []string{".conf", ".conflist", ".json"}

// isConfFile reports whether a runtime would load name as a configuration.
func isConfFile(name string) bool {
	return slices.Contains(confExtensions, filepath.Ext(name))
}

// primaryConfig returns the path of the runtime's configuration in dir,
// "" when the directory holds none yet (the primary CNI has not started).
func primaryConfig(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading the CNI configuration directory %s (--cni-conf-dir): %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() || !isConfFile(e.Name()) {
			continue
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return "", nil
	}
	sort.Strings(names)
	return filepath.Join(dir, names[0]), nil
}

// conflist is a network configuration list with its keys kept as written,
// so that an edit changes only the plugin list.
type conflist struct {
	// keys are the top-level keys other than "plugins".
	keys map[string]json.RawMessage
	// plugins are the entries in order.
	plugins []json.RawMessage
}

// speaksVersion reports whether kube2ra-cni can run in the list: its
// cniVersion (or one of the 1.1.0 spec's cniVersions, whichever the
// runtime picks) is one the plugin supports. A list of 0.2.0, or with none
// (read as 0.1.0), would fail every ADD and every DEL of the node with
// "incompatible CNI versions": pods could neither start nor be removed.
func (c *conflist) speaksVersion() (string, bool) {
	var v string
	_ = json.Unmarshal(c.keys["cniVersion"], &v)
	var vs []string
	_ = json.Unmarshal(c.keys["cniVersions"], &vs)
	supported := plugin.Versions().SupportedVersions()
	for _, x := range append([]string{v}, vs...) {
		if slices.Contains(supported, x) {
			return v, true
		}
	}
	if v == "" {
		v = "(none, read as 0.1.0)"
	}
	return v, false
}

// parseConfig reads a .conflist, or a single-plugin .conf/.json turned into
// a list of one (as libcni.ConfListFromConf does), so either can be chained.
func parseConfig(path string, data []byte) (*conflist, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		return nil, fmt.Errorf("CNI configuration %s is not a JSON object: %w", path, err)
	}
	c := &conflist{keys: keys}
	if raw, ok := keys["plugins"]; ok {
		if err := json.Unmarshal(raw, &c.plugins); err != nil {
			return nil, fmt.Errorf("CNI configuration %s: \"plugins\" is not a list: %w", path, err)
		}
		delete(keys, "plugins")
		return c, nil
	}
	if _, ok := keys["type"]; !ok {
		return nil, fmt.Errorf("CNI configuration %s has neither \"plugins\" nor \"type\": not a network configuration", path)
	}
	// A single-plugin configuration: cniVersion and name move to the list.
	entry := map[string]json.RawMessage{}
	for k, v := range keys {
		if k != "cniVersion" && k != "name" {
			entry[k] = v
		}
	}
	raw, err := json.Marshal(entry)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", path, err)
	}
	c.keys = map[string]json.RawMessage{}
	for _, k := range []string{"cniVersion", "name"} {
		if v, ok := keys[k]; ok {
			c.keys[k] = v
		}
	}
	c.plugins = []json.RawMessage{raw}
	return c, nil
}

// readConfig reads and parses the configuration at path, with its mode
// and modification time.
func readConfig(path string) (*conflist, fs.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CNI configuration: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CNI configuration: %w", err)
	}
	list, err := parseConfig(path, data)
	return list, st, err
}

// pluginType is an entry's "type", "" when it has none.
func pluginType(raw json.RawMessage) string {
	var e struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.Type
}

// entryPlace says where kube2ra's entries are in a list.
type entryPlace struct {
	// positions are the indexes of the kube2ra-cni entries.
	positions []int
	// total is the number of entries.
	total int
}

// place finds kube2ra's entries.
func (c *conflist) place() entryPlace {
	p := entryPlace{total: len(c.plugins)}
	for i, raw := range c.plugins {
		if pluginType(raw) == plugin.PluginType {
			p.positions = append(p.positions, i)
		}
	}
	return p
}

// hasExactly reports whether the list holds exactly one kube2ra entry,
// equal to want, chained after the primary plugin. It need not be last:
// another chained plugin that keeps itself last (linkerd-cni re-appends its
// entry whenever the file changes) would otherwise trade places with it for
// ever, rewriting the file each time.
func (c *conflist) hasExactly(want plugin.Config) bool {
	p := c.place()
	if len(p.positions) != 1 || p.positions[0] == 0 {
		return false
	}
	raw := c.plugins[p.positions[0]]
	var got plugin.Config
	if err := json.Unmarshal(raw, &got); err != nil {
		return false
	}
	return sameConfig(got, want) && onlyConfigKeys(raw)
}

// sameConfig compares two entries field by field.
func sameConfig(a, b plugin.Config) bool {
	return a.Type == b.Type && a.NodeIP == b.NodeIP && a.NodeIPv6 == b.NodeIPv6 &&
		a.Port == b.Port && slices.Equal(a.Redirect, b.Redirect) && slices.Equal(a.Refuse, b.Refuse) &&
		a.IPTablesBackend == b.IPTablesBackend
}

// onlyConfigKeys reports whether an entry holds nothing but the keys
// plugin.Config writes, so a stale key of an older agent is rewritten too.
func onlyConfigKeys(raw json.RawMessage) bool {
	var keys map[string]json.RawMessage
	if json.Unmarshal(raw, &keys) != nil {
		return false
	}
	want, _ := json.Marshal(plugin.Config{})
	var known map[string]json.RawMessage
	_ = json.Unmarshal(want, &known)
	known["nodeIPv6"], known["refuse"] = nil, nil
	for k := range keys {
		if _, ok := known[k]; !ok {
			return false
		}
	}
	return true
}

// withEntry drops every kube2ra entry and appends want last: a chained
// plugin after the primary one, which has set up the pod's interface.
func (c *conflist) withEntry(want plugin.Config) error {
	raw, err := json.Marshal(want)
	if err != nil {
		return fmt.Errorf("encoding the kube2ra-cni entry: %w", err)
	}
	if p := c.place(); len(p.positions) == 1 && p.positions[0] > 0 {
		// One entry after the primary: updated where it is (see hasExactly).
		c.plugins[p.positions[0]] = raw
		return nil
	}
	c.withoutEntry()
	c.plugins = append(c.plugins, raw)
	return nil
}

// withoutEntry drops every kube2ra entry and reports whether there was one.
func (c *conflist) withoutEntry() bool {
	n := len(c.plugins)
	c.plugins = slices.DeleteFunc(c.plugins, func(raw json.RawMessage) bool {
		return pluginType(raw) == plugin.PluginType
	})
	return len(c.plugins) != n
}

// leadingKeys are written first, in this order, as every CNI writes them.
var leadingKeys = []string{"cniVersion", "cniVersions", "name", "disableCheck", "disableGC"}

// encode writes the list with its known keys first, the others sorted and
// "plugins" last, indented by two spaces.
func (c *conflist) encode() ([]byte, error) {
	var rest []string
	for k := range c.keys {
		if !slices.Contains(leadingKeys, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	var b bytes.Buffer
	b.WriteString("{")
	for _, k := range append(slices.Clone(leadingKeys), rest...) {
		if v, ok := c.keys[k]; ok {
			key, _ := json.Marshal(k)
			b.Write(key)
			b.WriteString(":")
			b.Write(compact(v))
			b.WriteString(",")
		}
	}
	b.WriteString(`"plugins":[`)
	for i, p := range c.plugins {
		if i > 0 {
			b.WriteString(",")
		}
		b.Write(compact(p))
	}
	b.WriteString("]}")
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("encoding the CNI configuration: %w", err)
	}
	out.WriteString("\n")
	return out.Bytes(), nil
}

// compact removes the insignificant space of a valid JSON value.
func compact(v json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return v
	}
	return b.Bytes()
}
