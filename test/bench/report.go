package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Target is a goal a figure should reach.
type Target struct {
	// Op is "<=" or ">=".
	Op string `json:"op"`
	// Value is the bound.
	Value float64 `json:"value"`
}

// Met reports whether v reaches the target.
func (t Target) Met(v float64) bool {
	switch t.Op {
	case "<=":
		return v <= t.Value
	case ">=":
		return v >= t.Value
	}
	return false
}

func (t Target) String() string { return t.Op + " " + formatValue(t.Value) }

// Figure is one named result.
type Figure struct {
	// Name is the figure's name as issue 10 fixes it.
	Name string `json:"name"`
	// Value is the measured value.
	Value float64 `json:"value"`
	// Unit is the unit printed after the value.
	Unit string `json:"unit"`
	// Target is the goal, if the issue sets one.
	Target *Target `json:"target,omitempty"`
	// Met is whether Target was reached (absent without a target).
	Met *bool `json:"met,omitempty"`
	// Note says how the figure was obtained (sample sizes, quick-mode scale).
	Note string `json:"note,omitempty"`
}

// Check is a pass/fail statement about several figures (for example "the
// two RSS figures are within 10 MiB").
type Check struct {
	// What is the statement.
	What string `json:"what"`
	// Met is whether it holds.
	Met bool `json:"met"`
}

// Report collects every figure of a run.
type Report struct {
	// Quick is true for BENCH_QUICK runs.
	Quick bool `json:"quick"`
	// Started is when the run began.
	Started time.Time `json:"started"`
	// WallSeconds is the run's duration.
	WallSeconds float64 `json:"wallSeconds"`
	// Machine describes the host (CPUs, how busy it was), for reading the figures.
	Machine string `json:"machine,omitempty"`
	// Figures are in the order issue 10 lists them.
	Figures []Figure `json:"figures"`
	// Checks are statements over several figures.
	Checks []Check `json:"checks,omitempty"`
	// Details hold per-round data for whoever wants to look deeper.
	Details map[string]any `json:"details,omitempty"`
}

// FigureNames are the figures issue 10 asks for, in its order (issue 24's
// chained figures beside their direct ones).
var FigureNames = []string{
	"cred_rps", "baseline_rps", "cred_rps_ratio", "cred_p50_us", "cred_p99_us", "baseline_p99_us", "cred_p99_ratio",
	"passthrough_rps", "passthrough_p99_us", "direct_upstream_p99_us",
	"cold_first_request_p50_ms", "cold_first_request_p99_ms", "cold_noprefetch_p99_ms",
	"cold_chained_first_request_p50_ms", "cold_chained_first_request_p99_ms",
	"ready_ms",
	"rss_mib_remote0", "rss_mib_remote20000", "rss_mib_load",
	"upstream_calls_per_session", "upstream_calls_per_chained_session",
	"upstream_calls_per_pod_hour_node", "upstream_calls_per_pod_hour_pod", "upstream_calls_per_pod_hour_none",
	"upstream_calls_per_pod_hour_chained_node", "upstream_calls_per_pod_hour_chained_pod", "upstream_calls_per_pod_hour_chained_none",
	"pod_identity_rps", "pod_identity_rps_ratio", "pod_identity_p99_us", "pod_identity_p99_ratio", "pod_identity_vs_cred_rps",
}

// Targets are the issues' goals by figure name (issue 10's, tightened by
// issue 26: the credential routes within 0.90× the bare server's
// throughput and 1.25× its p99, and under 25 MiB resident, below kube2iam).
var Targets = map[string]Target{
	"cred_rps_ratio":             {Op: ">=", Value: 0.9},
	"cred_p99_ratio":             {Op: "<=", Value: 1.25},
	"cold_first_request_p99_ms":  {Op: "<=", Value: 150},
	"ready_ms":                   {Op: "<=", Value: 3000},
	"rss_mib_remote0":            {Op: "<=", Value: 25},
	"rss_mib_remote20000":        {Op: "<=", Value: 25},
	"rss_mib_load":               {Op: "<=", Value: 25},
	"upstream_calls_per_session": {Op: "<=", Value: 1.05},
	"pod_identity_rps_ratio":     {Op: ">=", Value: 0.9},
	"pod_identity_p99_ratio":     {Op: "<=", Value: 1.25},
	// Issue 18: verifying tokens must not make the token door more than
	// 20 % slower than the metadata door.
	"pod_identity_vs_cred_rps": {Op: ">=", Value: 0.8},
}

// Add records a figure (replacing one of the same name) and checks its target.
func (r *Report) Add(name string, value float64, unit, note string) {
	f := Figure{Name: name, Value: value, Unit: unit, Note: note}
	if t, ok := Targets[name]; ok {
		met := t.Met(value)
		f.Target, f.Met = &t, &met
	}
	r.Figures = slices.DeleteFunc(r.Figures, func(g Figure) bool { return g.Name == name })
	r.Figures = append(r.Figures, f)
	slices.SortStableFunc(r.Figures, func(a, b Figure) int { return orderOf(a.Name) - orderOf(b.Name) })
}

// Detail stores per-round data under key.
func (r *Report) Detail(key string, v any) {
	if r.Details == nil {
		r.Details = map[string]any{}
	}
	r.Details[key] = v
}

// Figure returns the named figure.
func (r *Report) Figure(name string) (Figure, bool) {
	for _, f := range r.Figures {
		if f.Name == name {
			return f, true
		}
	}
	return Figure{}, false
}

// Missing lists the named figures not recorded (every figure the issue
// asks for when names is nil).
func (r *Report) Missing(names []string) []string {
	if names == nil {
		names = FigureNames
	}
	var out []string
	for _, n := range names {
		if _, ok := r.Figure(n); !ok {
			out = append(out, n)
		}
	}
	return out
}

func orderOf(name string) int {
	if i := slices.Index(FigureNames, name); i >= 0 {
		return i
	}
	return len(FigureNames)
}

// formatValue prints with precision that suits the magnitude.
func formatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// WriteTable prints the human table.
func (r *Report) WriteTable(w io.Writer) error {
	mode := "full"
	if r.Quick {
		mode = "quick (BENCH_QUICK=1)"
	}
	fmt.Fprintf(w, "\nkube2ra benchmarks, %s run, %.0f s\n", mode, r.WallSeconds)
	if r.Machine != "" {
		fmt.Fprintf(w, "machine: %s\n", r.Machine)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tunit\ttarget\t\tnote")
	for _, f := range r.Figures {
		target, verdict := "", ""
		if f.Target != nil {
			target = f.Target.String()
			verdict = "ok"
			if !*f.Met {
				verdict = "MISS"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Name, formatValue(f.Value), f.Unit, target, verdict, f.Note)
	}
	for _, c := range r.Checks {
		verdict := "ok"
		if !c.Met {
			verdict = "MISS"
		}
		fmt.Fprintf(tw, "(check)\t\t\t%s\t%s\t\n", c.What, verdict)
	}
	return tw.Flush()
}

// WriteBenchLines prints one `BENCH <name> <value> <unit>` line per figure.
func (r *Report) WriteBenchLines(w io.Writer) error {
	for _, f := range r.Figures {
		if _, err := fmt.Fprintf(w, "BENCH %s %s %s\n", f.Name, formatValue(f.Value), f.Unit); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes the whole report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the benchmark JSON to %s (BENCH_OUT): %w", path, err)
	}
	return nil
}

// Median of xs (0 when empty).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// NearestRank is the q quantile of xs by nearest rank (0 when empty).
func NearestRank(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// JoinFloats prints xs compactly, for notes.
func JoinFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = formatValue(x)
	}
	return strings.Join(parts, " ")
}
