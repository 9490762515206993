package imdsprobe_test

import (
	"context"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/imdsprobe"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
)

// probeTimeout bounds each probe request; the hop-limited PUT ends in it.
const probeTimeout = 500 * time.Millisecond

// TestProbeTellsEachEC2Setting runs the probe against the fake metadata
// service in each configuration EC2 allows. The fake sends the token
// response with the hop limit as its IP TTL, as EC2 does.
func TestProbeTellsEachEC2Setting(t *testing.T) {
	tests := []struct {
		name    string
		opts    fakeimds.Options
		want    imdsprobe.Result
		exposed bool
	}{
		{name: "hardened: tokens required, hop limit 1", opts: fakeimds.Options{RequireToken: true, HopLimit: 1},
			want: imdsprobe.Result{HopLimitKnown: true}},
		{name: "IMDSv1 open, hop limit 1: GETs are not hop-limited", opts: fakeimds.Options{HopLimit: 1},
			want: imdsprobe.Result{IMDSv1Open: true, HopLimitKnown: true}, exposed: true},
		{name: "tokens required, hop limit 2 (the EKS default for containers)", opts: fakeimds.Options{RequireToken: true, HopLimit: 2},
			want: imdsprobe.Result{HopLimitKnown: true, TokenReachesPods: true}, exposed: true},
		{name: "no IMDSv2: the hop limit cannot be told", opts: fakeimds.Options{RequireToken: true, TokenPUTStatus: 403},
			want: imdsprobe.Result{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fakeimds.New(tt.opts)
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Stop() })
			got, err := imdsprobe.Probe(context.Background(), s.URL(), probeTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || got.Exposed() != tt.exposed {
				t.Errorf("Probe = %+v (exposed %v), want %+v (exposed %v)", got, got.Exposed(), tt.want, tt.exposed)
			}
			if tt.exposed && got.Problems() == "" {
				t.Error("an exposed result names no problem")
			}
		})
	}
}

func TestProbeNamesAnUnreachableService(t *testing.T) {
	_, err := imdsprobe.Probe(context.Background(), "http://127.0.0.1:1", probeTimeout)
	if err == nil {
		t.Fatal("Probe of a closed port succeeded")
	}
}
