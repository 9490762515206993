package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/rolesanywhere"
)

// TestSessionNamingDefaultsAndRefusals: Roles Anywhere defaults to one
// session per node and role, STS to namespace.pod; the old flag still means
// pod; contradictions and none with STS are refused, naming the flag.
func TestSessionNamingDefaultsAndRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ra      bool
		flag    string
		oldFlag bool
		want    credentials.SessionNaming
		wantErr string
	}{
		{name: "roles anywhere defaults to node", ra: true, want: credentials.SessionNamingNode},
		{name: "sts defaults to pod", want: credentials.SessionNamingPod},
		{name: "roles anywhere per pod on request", ra: true, flag: "pod", want: credentials.SessionNamingPod},
		{name: "roles anywhere without a name", ra: true, flag: "none", want: credentials.SessionNamingNone},
		{name: "sts per node on request", flag: "node", want: credentials.SessionNamingNode},
		{name: "the old flag means pod", ra: true, oldFlag: true, want: credentials.SessionNamingPod},
		{name: "the old flag agrees with pod", ra: true, oldFlag: true, flag: "pod", want: credentials.SessionNamingPod},
		{name: "the old flag contradicting the new one is refused", ra: true, oldFlag: true, flag: "node", wantErr: "--ra-role-session-name (the old spelling of --session-name=pod) contradicts --session-name=node"},
		{name: "sts cannot do without a name", flag: "none", wantErr: "--session-name=none: sts:AssumeRole requires a session name"},
		{name: "an unknown value is named", ra: true, flag: "namespace", wantErr: `--session-name: session naming "namespace" is unknown`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validSTS()
			if tc.ra {
				c = validRA(t)
			}
			c.SessionNaming, c.RARoleSessionName = tc.flag, tc.oldFlag
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.parsed.sessionNaming != tc.want {
				t.Errorf("naming %q, want %q", c.parsed.sessionNaming, tc.want)
			}
		})
	}
}

// TestPodCredentialsShareSessionsAsTheNamingSays drives the agent's real
// broker and cache: with node naming two pods of the node using one role
// cost one upstream call and get the same session; with pod naming each
// pod costs one call and gets its own, so one pod's session is never
// handed to another.
func TestPodCredentialsShareSessionsAsTheNamingSays(t *testing.T) {
	for _, tc := range []struct {
		naming    credentials.SessionNaming
		wantCalls int
		wantNames []string
	}{
		{naming: credentials.SessionNamingNode, wantCalls: 1, wantNames: []string{"node-a", "node-a"}},
		{naming: credentials.SessionNamingPod, wantCalls: 2, wantNames: []string{"team-a.web-0", "team-b.api-0"}},
		{naming: credentials.SessionNamingNone, wantCalls: 1, wantNames: []string{"", ""}},
	} {
		t.Run(string(tc.naming), func(t *testing.T) {
			src := &namingSource{}
			cache, err := credentials.NewCredentialCache(credentials.CacheOptions{Source: src, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			broker, err := newPodCredentials(cache, podRequestRules{naming: tc.naming, node: "node-a"}, prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			role := k8s.Role{ARN: "arn:aws:iam::123456789012:role/app"}
			pods := []*k8s.Pod{
				{Namespace: "team-a", Name: "web-0", UID: types.UID("u1")},
				{Namespace: "team-b", Name: "api-0", UID: types.UID("u2")},
			}
			var keys []string
			for i, pod := range pods {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				creds, err := broker.GetCredentials(ctx, pod, role)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, creds.AccessKeyID)
				if got := src.names[creds.AccessKeyID]; got != tc.wantNames[i] {
					t.Errorf("pod %s/%s got a session named %q, want %q", pod.Namespace, pod.Name, got, tc.wantNames[i])
				}
			}
			if src.calls != tc.wantCalls {
				t.Errorf("%d upstream calls for two pods, want %d", src.calls, tc.wantCalls)
			}
			if shared := keys[0] == keys[1]; shared != (tc.wantCalls == 1) {
				t.Errorf("the two pods share access key %t, want %t", shared, tc.wantCalls == 1)
			}
		})
	}
}

// namingSource issues distinct credentials per call and remembers the
// session name each was issued under.
type namingSource struct {
	calls int
	names map[string]string
}

func (s *namingSource) Name() string { return "naming" }

func (s *namingSource) Fetch(_ context.Context, req credentials.Request) (credentials.Credentials, error) {
	s.calls++
	if s.names == nil {
		s.names = map[string]string{}
	}
	key := "ASIA" + strings.Repeat("0", 15) + string(rune('A'+s.calls))
	s.names[key] = req.SessionName
	return credentials.Credentials{AccessKeyID: key, SecretAccessKey: "s", SessionToken: "t", Expiration: time.Now().Add(time.Hour)}, nil
}

// TestSessionNamesRefusedBecomesANodeEvent: the Roles Anywhere source's
// refusal hook records a Warning Event on this node naming the profile and
// acceptRoleSessionName, once the recorder is set; before that, nothing
// (the source has logged it).
func TestSessionNamesRefusedBecomesANodeEvent(t *testing.T) {
	fake := record.NewFakeRecorder(10)
	n := &nodeNotices{node: "node-a"}
	n.sessionNamesRefused("arn:profile", "before the recorder")
	n.events.Store(&k8s.EventRecorder{RateLimitedRecorder: k8s.NewRateLimitedRecorder(fake, k8s.EventOptions{Logger: logrus.New()})})
	n.sessionNamesRefused("arn:aws:rolesanywhere:eu-west-1:111122223333:profile/p", rolesanywhere.SessionNamesRefusedMessage)
	select {
	case ev := <-fake.Events:
		for _, want := range []string{"Warning", k8s.ReasonSessionNamesRefused, "profile/p", "acceptRoleSessionName"} {
			if !strings.Contains(ev, want) {
				t.Errorf("event %q lacks %q", ev, want)
			}
		}
	default:
		t.Fatal("no Event recorded")
	}
	select {
	case ev := <-fake.Events:
		t.Fatalf("a second Event %q (the one before the recorder existed must not appear)", ev)
	default:
	}
}

// TestUpstreamFailuresReachThePodAsRateLimitedEvents: a pod whose role
// AWS refuses, or whose call AWS throttles, gets a Warning Event with the
// reason and what to do, at most the recorder's burst however often it
// asks; every failed request is counted by reason; an outage (which passes
// by itself) makes no Event.
func TestUpstreamFailuresReachThePodAsRateLimitedEvents(t *testing.T) {
	const role = "arn:aws:iam::123456789012:role/app"
	for _, tc := range []struct {
		name       string
		err        *credentials.Error
		wantReason string
	}{
		{"role does not trust the node", &credentials.Error{Kind: credentials.KindDenied, Source: credentials.STSSourceName, RoleARN: role, Code: "AccessDenied"}, credentials.ReasonUpstreamAccessDenied},
		{"throttled by AWS", &credentials.Error{Kind: credentials.KindThrottled, Source: "rolesanywhere", RoleARN: role, Code: "ThrottlingException"}, credentials.ReasonUpstreamThrottled},
		{"expired node certificate", &credentials.Error{Kind: credentials.KindDenied, Source: "rolesanywhere", RoleARN: role, Code: credentials.CodeCertificateExpired}, credentials.ReasonNodeCertificateExpired},
		{"outage", &credentials.Error{Kind: credentials.KindUnavailable, Source: "rolesanywhere", RoleARN: role, Code: "ServiceUnavailable"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &failingSource{err: tc.err}
			cache, err := credentials.NewCredentialCache(credentials.CacheOptions{Source: src, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			broker, err := newPodCredentials(cache, podRequestRules{naming: credentials.SessionNamingNode, node: "node-a"}, reg)
			if err != nil {
				t.Fatal(err)
			}
			fake := record.NewFakeRecorder(100)
			broker.events = k8s.NewPodEvents(k8s.NewRateLimitedRecorder(fake, k8s.EventOptions{Logger: logrus.New()}))
			pod := &k8s.Pod{Namespace: "team-a", Name: "web-0", UID: types.UID("u1")}
			const asks = 10
			for range asks {
				if _, err := broker.GetCredentials(context.Background(), pod, k8s.Role{ARN: role}); err == nil {
					t.Fatal("no error")
				}
			}
			var events []string
			for len(fake.Events) > 0 {
				events = append(events, <-fake.Events)
			}
			if tc.wantReason == "" {
				if len(events) != 0 {
					t.Errorf("events %q for a failure that passes by itself", events)
				}
				return
			}
			if len(events) != k8s.DefaultEventBurst {
				t.Errorf("%d events for %d requests, want the burst %d: %q", len(events), asks, k8s.DefaultEventBurst, events)
			}
			for _, ev := range events {
				if !strings.HasPrefix(ev, "Warning "+tc.wantReason+" ") {
					t.Errorf("event %q, want a Warning %s", ev, tc.wantReason)
				}
			}
			if got := testutil.ToFloat64(broker.failures.WithLabelValues(tc.wantReason)); got != asks {
				t.Errorf("kube2ra_credential_failures_total{reason=%q} = %v, want %d", tc.wantReason, got, asks)
			}
		})
	}
}

// failingSource fails every call with err.
type failingSource struct{ err error }

func (s *failingSource) Name() string { return "failing" }

func (s *failingSource) Fetch(context.Context, credentials.Request) (credentials.Credentials, error) {
	return credentials.Credentials{}, s.err
}
