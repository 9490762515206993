package credentials

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	// longRoleARN is a first role that grants 12 h sessions.
	longRoleARN = "arn:aws:iam::111122223333:role/long"
	// targetRoleARN is in another account and trusts appRoleARN and longRoleARN.
	targetRoleARN = "arn:aws:iam::444455556666:role/target"
	// pinnedRoleARN trusts appRoleARN only with an external ID.
	pinnedRoleARN = "arn:aws:iam::444455556666:role/pinned"
	pinnedID      = "eu-west-1/111122223333/c1/ns/sa"
	// closedRoleARN trusts nobody the node can reach.
	closedRoleARN = "arn:aws:iam::444455556666:role/closed"
)

// newChainEnv is the STS env with target roles in a second account and a
// chain source over the STS source, which is also the target hop's client.
func newChainEnv(t *testing.T, mutate ...func(*STSOptions)) (*stsEnv, *ChainSource) {
	t.Helper()
	env := newSTSEnv(t, mutate...)
	for _, r := range []fakests.Role{
		{ARN: longRoleARN, Trust: []string{nodeARN}, MaxSessionDuration: 12 * time.Hour},
		{ARN: targetRoleARN, Trust: []string{appRoleARN, longRoleARN}, AllowTagSession: true, MaxSessionDuration: 12 * time.Hour},
		{ARN: pinnedRoleARN, Trust: []string{appRoleARN}, ExternalID: pinnedID},
		{ARN: closedRoleARN, Trust: []string{"arn:aws:iam::444455556666:role/other"}},
	} {
		if err := env.fake.AddRole(r); err != nil {
			t.Fatal(err)
		}
	}
	chain, err := NewChainSource(env.source, env.source)
	if err != nil {
		t.Fatal(err)
	}
	return env, chain
}

func chainedReq(first, target string) Request {
	return Request{RoleARN: first, SessionName: "node-1", TargetRoleARN: target, TargetSessionName: "ns.pod"}
}

// TestChainSourceAssumesTheTargetWithTheFirstRolesCredentials: the target
// role's session is assumed by the first role's session (its chain says
// so), carries the tags, transitive keys and policy (the first hop none),
// and asks for one hour even when sessions are configured longer.
func TestChainSourceAssumesTheTargetWithTheFirstRolesCredentials(t *testing.T) {
	env, chain := newChainEnv(t, func(o *STSOptions) { o.Duration = 12 * time.Hour })
	req := chainedReq(longRoleARN, targetRoleARN)
	req.Tags = []Tag{{"eks-cluster-name", "c1"}, {TagNamespace, "ns"}}
	req.TransitiveTags = true
	req.Policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`
	creds, err := chain.Fetch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	sess, ok := env.fake.Session(creds.AccessKeyID)
	if !ok || sess.RoleARN != targetRoleARN || sess.SessionName != "ns.pod" {
		t.Fatalf("served session %+v, want the target role's", sess)
	}
	firsts := env.fake.Sessions(longRoleARN)
	if len(firsts) != 1 || len(firsts[0].Tags) != 0 || firsts[0].Policy != "" || firsts[0].SessionName != "node-1" || firsts[0].DurationSeconds != 12*3600 {
		t.Fatalf("first hop sessions %+v, want one untagged 12 h session named node-1", firsts)
	}
	if want := []string{nodeARN, firsts[0].AssumedRoleARN}; !slices.Equal(sess.Chain, want) {
		t.Errorf("chain %v, want %v", sess.Chain, want)
	}
	if sess.Tags["eks-cluster-name"] != "c1" || sess.Tags[TagNamespace] != "ns" || len(sess.TransitiveTagKeys) != 2 || sess.Policy != req.Policy {
		t.Errorf("target session tags %v transitive %v policy %q", sess.Tags, sess.TransitiveTagKeys, sess.Policy)
	}
	if sess.DurationSeconds != int(ChainedMaxSessionDuration/time.Second) || creds.Expiration.Sub(env.clock.Now()) != time.Hour {
		t.Errorf("target hop asked %d s and expires in %s, want 3600 s and 1h", sess.DurationSeconds, creds.Expiration.Sub(env.clock.Now()))
	}
}

func TestChainSourcePassesTheTargetExternalID(t *testing.T) {
	env, chain := newChainEnv(t)
	req := chainedReq(appRoleARN, pinnedRoleARN)
	if _, err := chain.Fetch(context.Background(), req); KindOf(err) != KindDenied {
		t.Fatalf("without the external ID: %v, want denied", err)
	}
	req.TargetExternalID = pinnedID
	creds, err := chain.Fetch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if sess, _ := env.fake.Session(creds.AccessKeyID); sess.ExternalID != pinnedID {
		t.Errorf("external ID at STS %q", sess.ExternalID)
	}
}

// TestChainSourceNamesTheRefusedHop: a denial says which role refused, so
// the Event tells whose trust policy to fix.
func TestChainSourceNamesTheRefusedHop(t *testing.T) {
	for _, tc := range []struct {
		name      string
		req       Request
		wantKind  ErrorKind
		wantHop   Hop
		wantRole  string
		wantCalls int
	}{
		{name: "target not trusting the first role", req: chainedReq(appRoleARN, closedRoleARN),
			wantKind: KindDenied, wantHop: HopTarget, wantRole: closedRoleARN, wantCalls: 2},
		{name: "first role not trusting the node", req: chainedReq(deniedRoleARN, targetRoleARN),
			wantKind: KindDenied, wantHop: HopFirst, wantRole: deniedRoleARN, wantCalls: 1},
		{name: "target in another partition", req: chainedReq(appRoleARN, "arn:aws-cn:iam::444455556666:role/target"),
			wantKind: KindInvalid, wantHop: HopTarget, wantRole: "arn:aws-cn:iam::444455556666:role/target", wantCalls: 0},
		{name: "target tagged without sts:TagSession", req: func() Request {
			r := chainedReq(appRoleARN, pinnedRoleARN)
			r.TargetExternalID, r.Tags = pinnedID, []Tag{{TagNamespace, "ns"}}
			return r
		}(), wantKind: KindDenied, wantHop: HopTarget, wantRole: pinnedRoleARN, wantCalls: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, chain := newChainEnv(t)
			_, err := chain.Fetch(context.Background(), tc.req)
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.wantKind || e.Hop != tc.wantHop || e.RoleARN != tc.wantRole {
				t.Fatalf("got %#v, want %s at %s for %s", err, tc.wantKind, tc.wantHop, tc.wantRole)
			}
			if !strings.Contains(err.Error(), string(tc.wantHop)) {
				t.Errorf("message %q does not name the hop", err)
			}
			if got := env.fake.Calls("AssumeRole"); got != tc.wantCalls {
				t.Errorf("%d AssumeRole calls, want %d", got, tc.wantCalls)
			}
		})
	}
}

// TestCacheHoldsOneFlightAndRefreshesBothHops: concurrent misses for one
// chained key make one chain (two calls), and a tracked chained key is
// refreshed ahead of its one-hour expiry through both hops again.
func TestCacheHoldsOneFlightAndRefreshesBothHops(t *testing.T) {
	env, chain := newChainEnv(t, func(o *STSOptions) { o.Duration = time.Hour })
	c, err := NewCredentialCache(CacheOptions{Source: chain, Clock: env.clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ce := &cacheEnv{stsEnv: env, cache: c}
	ce.run(t)
	req := chainedReq(appRoleARN, targetRoleARN)
	var wg sync.WaitGroup
	keys := make([]string, 10)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i] = get(t, c, req).AccessKeyID
		}()
	}
	wg.Wait()
	if ce.calls() != 2 {
		t.Fatalf("%d AssumeRole calls for 10 concurrent misses, want 2 (one chain)", ce.calls())
	}
	for _, k := range keys[1:] {
		if k != keys[0] {
			t.Fatal("concurrent callers got different sessions")
		}
	}
	// A key differing only in the target, the policy or the target's
	// external ID is another entry.
	for _, other := range []Request{
		chainedReq(appRoleARN, longRoleARN),
		func() Request { r := req; r.Policy = `{}`; return r }(),
		func() Request { r := req; r.TargetExternalID = "x"; return r }(),
		req.FirstHop(),
	} {
		if other.Key() == req.Key() || sameRequest(other, req) {
			t.Errorf("%+v shares the chained request's key", other)
		}
	}

	c.Track("uid", req)
	first := get(t, c, req)
	env.clock.Step(50 * time.Minute)
	eventually(t, "the chain is refreshed", func() bool { return ce.calls() == 4 })
	eventually(t, "the refreshed target credentials are served", func() bool { return get(t, c, req).AccessKeyID != first.AccessKeyID })
	if n := len(env.fake.Sessions(appRoleARN)); n != 2 {
		t.Errorf("%d first-hop sessions, want 2 (the refresh went through both hops)", n)
	}
	if n := len(env.fake.Sessions(targetRoleARN)); n != 2 {
		t.Errorf("%d target sessions, want 2", n)
	}
}
