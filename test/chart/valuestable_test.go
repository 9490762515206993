package chart_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/test/chart"
)

// TestChartReadmeValuesTableMatchesTheSchema: every value the schema
// accepts has a row in the chart README's values table, and every value a
// row names is one the schema accepts (a renamed or removed value cannot
// stay documented).
func TestChartReadmeValuesTableMatchesTheSchema(t *testing.T) {
	dir, err := chart.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	leaves := schemaLeaves(t, filepath.Join(dir, "values.schema.json"))
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	entries := valuesTableEntries(t, string(readme))
	for _, leaf := range leaves {
		if !slices.ContainsFunc(entries, func(e string) bool { return covers(e, leaf) }) {
			t.Errorf("value %s is in values.schema.json but in no row of the chart README's values table", leaf)
		}
	}
	for _, e := range entries {
		if !slices.ContainsFunc(leaves, func(leaf string) bool { return covers(e, leaf) }) {
			t.Errorf("the chart README's values table documents %s, which values.schema.json does not accept", e)
		}
	}
}

// covers says whether a table entry documents a schema leaf: the leaf
// itself, a group above it (`updateStrategy`), or a wildcard (`serviceAccount.*`).
func covers(entry, leaf string) bool {
	entry = strings.TrimSuffix(entry, ".*")
	return leaf == entry || strings.HasPrefix(leaf, entry+".")
}

// schemaLeaves lists the dotted paths of the schema's values: object
// properties are walked, anything else (including free-form objects such
// as resources) is a leaf. Helm's own `global` is left out.
func schemaLeaves(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root schemaNode
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var leaves []string
	var walk func(prefix string, n schemaNode)
	walk = func(prefix string, n schemaNode) {
		if len(n.Properties) == 0 {
			leaves = append(leaves, prefix)
			return
		}
		for k, child := range n.Properties {
			if prefix == "" && k == "global" {
				continue
			}
			walk(strings.TrimPrefix(prefix+"."+k, "."), child)
		}
	}
	walk("", root)
	slices.Sort(leaves)
	return leaves
}

// schemaNode is the part of a JSON schema the walk reads.
type schemaNode struct {
	Properties map[string]schemaNode `json:"properties"`
}

// valuesTableEntries reads the first column of the table under "## Values"
// and expands its shorthand: several values in a cell, and brace groups
// (`image.{repository, tag}`).
func valuesTableEntries(t *testing.T, readme string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Values\n")
	if !ok {
		t.Fatal("the chart README has no ## Values section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var entries []string
	code := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		for _, m := range code.FindAllStringSubmatch(first, -1) {
			entries = append(entries, expandBraces(m[1])...)
		}
	}
	if len(entries) == 0 {
		t.Fatal("the chart README's values table has no rows")
	}
	return entries
}

// expandBraces expands the first {a, b} group of s and recurses on the rest.
func expandBraces(s string) []string {
	open := strings.Index(s, "{")
	if open < 0 {
		return []string{s}
	}
	end := strings.Index(s[open:], "}")
	if end < 0 {
		return []string{s}
	}
	end += open
	var out []string
	for _, alt := range strings.Split(s[open+1:end], ",") {
		out = append(out, expandBraces(s[:open]+strings.TrimSpace(alt)+s[end+1:])...)
	}
	return out
}
