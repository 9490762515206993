package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportPrintsIssueNamesInOrderWithTargets(t *testing.T) {
	var r Report
	r.Add("ready_ms", 4000, "ms", "")
	r.Add("cred_rps", 12345.67, "req/s", "")
	r.Add("cred_rps_ratio", 0.91234, "ratio", "pairwise")
	var lines bytes.Buffer
	if err := r.WriteBenchLines(&lines); err != nil {
		t.Fatal(err)
	}
	want := "BENCH cred_rps 12346 req/s\nBENCH cred_rps_ratio 0.912 ratio\nBENCH ready_ms 4000 ms\n"
	if lines.String() != want {
		t.Fatalf("BENCH lines:\n%s\nwant:\n%s", lines.String(), want)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "MISS") || !strings.Contains(table.String(), "pairwise") {
		t.Fatalf("table does not flag the missed ready_ms target or lost the note:\n%s", table.String())
	}
	if missing := r.Missing(nil); len(missing) != len(FigureNames)-3 {
		t.Fatalf("missing %v", missing)
	}
}

func TestReportReplacesAFigureOfTheSameName(t *testing.T) {
	var r Report
	r.Add("ready_ms", 4000, "ms", "")
	r.Add("ready_ms", 100, "ms", "")
	if len(r.Figures) != 1 || r.Figures[0].Value != 100 || !*r.Figures[0].Met {
		t.Fatalf("figures %+v", r.Figures)
	}
}

func TestReportJSONRoundTrips(t *testing.T) {
	r := Report{Quick: true}
	r.Add("cred_p99_ratio", 1.2, "ratio", "")
	r.Detail("rounds", []float64{1, 2})
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Quick || back.Figures[0].Name != "cred_p99_ratio" || !*back.Figures[0].Met {
		t.Fatalf("round trip lost data: %s", raw)
	}
}

func TestMedianAndNearestRank(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median %v", m)
	}
	if m := Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatalf("median %v", m)
	}
	xs := make([]float64, 50)
	for i := range xs {
		xs[i] = float64(50 - i)
	}
	if p := NearestRank(xs, 0.99); p != 50 {
		t.Fatalf("p99 of 1..50 = %v, want 50", p)
	}
	if p := NearestRank(xs, 0.5); p != 25 {
		t.Fatalf("p50 of 1..50 = %v, want 25", p)
	}
}
