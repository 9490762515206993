package rolesanywhere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
)

// TestProfileRefusingSessionNamesFallsBackOnce: against a profile whose
// acceptRoleSessionName is false (the fake answers 403
// AccessDeniedException "Not authorized to set roleSessionName." as AWS
// does), the first Fetch with a session name is refused, made again
// without one and succeeds; every later Fetch sends none (one call each);
// the warning, the gauge and the hook say so once, naming
// acceptRoleSessionName; no secret reaches the log.
func TestProfileRefusingSessionNamesFallsBackOnce(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{AcceptRoleSessionName: false})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&logs)
	var mu sync.Mutex
	var notices []string
	src := newTestSource(t, env, id.files, func(_ *Config, d *Deps) {
		d.Registerer, d.Logger = reg, logger
		d.OnSessionNamesRefused = func(profile, msg string) {
			mu.Lock()
			defer mu.Unlock()
			notices = append(notices, profile+": "+msg)
		}
	})
	gauge := func() float64 {
		return testutil.ToFloat64(src.names.gauge.WithLabelValues(testProfile))
	}
	if g := gauge(); g != 0 {
		t.Fatalf("gauge %v before any refusal, want 0", g)
	}

	serial := fmt.Sprintf("%x", id.leaf.SerialNumber.Bytes())
	var secrets []string
	for i, name := range []string{"node-1", "node-1", "team-a.web-0"} {
		before := env.fake.Stats()
		creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole, SessionName: name})
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		secrets = append(secrets, creds.SecretAccessKey, creds.SessionToken)
		is, _ := env.fake.Issued(creds.AccessKeyID)
		if is.SessionName != serial {
			t.Errorf("fetch %d: session %q, want the serial %q", i, is.SessionName, serial)
		}
		after := env.fake.Stats()
		wantCalls, wantDenied := 1, 0
		if i == 0 {
			wantCalls, wantDenied = 2, 1 // refused, then made again without the name
		}
		if got := after.Requests - before.Requests; got != wantCalls {
			t.Errorf("fetch %d made %d calls, want %d", i, got, wantCalls)
		}
		if got := after.Denied - before.Denied; got != wantDenied {
			t.Errorf("fetch %d was denied %d times, want %d", i, got, wantDenied)
		}
	}
	if g := gauge(); g != 1 {
		t.Errorf("gauge %v after the refusal, want 1", g)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], testProfile) || !strings.Contains(notices[0], "acceptRoleSessionName") {
		t.Errorf("notices %q, want one naming the profile and acceptRoleSessionName", notices)
	}
	if n := strings.Count(logs.String(), "acceptRoleSessionName is false"); n != 1 {
		t.Errorf("%d warnings naming acceptRoleSessionName, want 1:\n%s", n, logs.String())
	}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Fatal("a secret key or session token reached the log")
		}
	}
	if n, err := testutil.GatherAndCount(reg, "kube2ra_rolesanywhere_session_names_refused"); err != nil || n != 1 {
		t.Errorf("%d series of the gauge (%v), want 1", n, err)
	}
}

// TestOtherDenialsAreNotTakenForASessionNameRefusal: a denial for another
// reason (the role is not in the profile) is returned as it is, without a
// second call and without giving up session names.
func TestOtherDenialsAreNotTakenForASessionNameRefusal(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{AcceptRoleSessionName: true})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	src := newTestSource(t, env, id.files, func(_ *Config, d *Deps) { d.Registerer = prometheus.NewRegistry() })
	before := env.fake.Stats().Requests
	_, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testOtherRole, SessionName: "node-1"})
	if credentials.KindOf(err) != credentials.KindDenied {
		t.Fatalf("error %v, want a denial", err)
	}
	if got := env.fake.Stats().Requests - before; got != 1 {
		t.Errorf("%d calls, want 1", got)
	}
	creds, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole, SessionName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if is, _ := env.fake.Issued(creds.AccessKeyID); is.SessionName != "node-1" {
		t.Errorf("session %q after an unrelated denial, want node-1", is.SessionName)
	}
	if g := testutil.ToFloat64(src.names.gauge.WithLabelValues(testProfile)); g != 0 {
		t.Errorf("gauge %v, want 0", g)
	}
}

// TestFetchRefusesOutsideTheCertificatesValidity: with the node
// certificate expired or not yet valid, Fetch makes no call (AWS would
// refuse it) and says which, with a code the agent turns into an Event.
func TestFetchRefusesOutsideTheCertificatesValidity(t *testing.T) {
	now := time.Now()
	root := newRootCA(t, now)
	env := startFake(t, root, false, fakera.Profile{AcceptRoleSessionName: true})
	id := newIdentity(t, t.TempDir(), root, p256, sec1, false, false, now)
	clk := clocktesting.NewFakeClock(now)
	src := newTestSource(t, env, id.files, func(_ *Config, d *Deps) { d.Clock = clk })
	for _, tc := range []struct {
		at       time.Time
		code     string
		contains string
	}{
		{id.leaf.NotAfter.Add(time.Second), credentials.CodeCertificateExpired, "renew the node certificate"},
		{id.leaf.NotBefore.Add(-time.Second), credentials.CodeCertificateNotYetValid, "check the node's clock"},
	} {
		clk.SetTime(tc.at)
		before := env.fake.Stats().Requests
		_, err := src.Fetch(context.Background(), credentials.Request{RoleARN: testRole, SessionName: "node-1"})
		var e *credentials.Error
		if !errors.As(err, &e) || e.Kind != credentials.KindDenied || e.Code != tc.code || !strings.Contains(e.Message, tc.contains) {
			t.Fatalf("at %s: error %#v, want a denial with code %s", tc.at, err, tc.code)
		}
		if got := env.fake.Stats().Requests - before; got != 0 {
			t.Errorf("at %s: %d calls, want none", tc.at, got)
		}
	}
}
