package fakests_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	// raKey is a Roles Anywhere session taught to the fake (account A).
	raKey       = "ASIARASESSION0000001"
	raSecret    = "raSecret/000000000000000000000000000000"
	raToken     = "raToken"
	raFirstRole = "arn:aws:iam::111122223333:role/first"
	raARN       = "arn:aws:sts::111122223333:assumed-role/first/node-1"
	// targetRole is in account B and trusts the first role with tags.
	targetRole = "arn:aws:iam::444455556666:role/target"
	// pinnedRole is in account B and trusts the first role with an external ID.
	pinnedRole = "arn:aws:iam::444455556666:role/pinned"
	// deeperRole is in account B and trusts targetRole.
	deeperRole = "arn:aws:iam::444455556666:role/deeper"
)

func startChain(t *testing.T, clk *clocktesting.FakeClock) *fakests.Server {
	return start(t, func(o *fakests.Options) {
		o.Clock = clk
		o.Principals = append(o.Principals, fakests.Principal{AccessKeyID: raKey, SecretAccessKey: raSecret, SessionToken: raToken, ARN: raARN, Expiration: clk.Now().Add(time.Hour)})
		o.Roles = append(o.Roles,
			fakests.Role{ARN: targetRole, Trust: []string{raFirstRole}, AllowTagSession: true, MaxSessionDuration: 12 * time.Hour},
			fakests.Role{ARN: pinnedRole, Trust: []string{raFirstRole}, ExternalID: "eu-central-1/111122223333/c1/ns/sa"},
			fakests.Role{ARN: deeperRole, Trust: []string{targetRole}, AllowTagSession: true},
		)
	})
}

func tag(k, v string) ststypes.Tag { return ststypes.Tag{Key: aws.String(k), Value: aws.String(v)} }

// TestSecondHopRecordsItsChainTagsAndPolicy: a target role assumed with a
// Roles Anywhere session's credentials is issued only when the target
// trusts the first role, and the session remembers what CloudTrail would
// show: who assumed it through whom, its tags and its policy.
func TestSecondHopRecordsItsChainTagsAndPolicy(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	s := startChain(t, clk)
	ctx := context.Background()
	first := client(s, raKey, raSecret, raToken)
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
	out, err := first.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(targetRole), RoleSessionName: aws.String("ns.pod"), DurationSeconds: aws.Int32(3600),
		Tags:              []ststypes.Tag{tag("kubernetes-namespace", "ns"), tag("eks-cluster-name", "c1")},
		TransitiveTagKeys: []string{"kubernetes-namespace"},
		Policy:            aws.String(policy),
	})
	if err != nil {
		t.Fatal(err)
	}
	sess, ok := s.Session(*out.Credentials.AccessKeyId)
	if !ok {
		t.Fatal("issued session not recorded")
	}
	if want := []string{raARN}; !slices.Equal(sess.Chain, want) || sess.SourceARN != raARN {
		t.Errorf("chain %v source %s, want %v", sess.Chain, sess.SourceARN, want)
	}
	if sess.Tags["kubernetes-namespace"] != "ns" || sess.Tags["eks-cluster-name"] != "c1" || !slices.Equal(sess.TransitiveTagKeys, []string{"kubernetes-namespace"}) {
		t.Errorf("tags %v transitive %v", sess.Tags, sess.TransitiveTagKeys)
	}
	if sess.Policy != policy || sess.DurationSeconds != 3600 {
		t.Errorf("policy %q duration %d", sess.Policy, sess.DurationSeconds)
	}
	//lint:ignore SA1019 AWS still answers PackedPolicySize (the SDK marks it deprecated), so the fake must too
	packed := out.PackedPolicySize
	if packed == nil || *packed <= 0 || *packed > 100 {
		t.Errorf("PackedPolicySize = %v", packed)
	}
	who, err := client(s, *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *who.Arn != "arn:aws:sts::444455556666:assumed-role/target/ns.pod" || *who.Account != "444455556666" {
		t.Errorf("GetCallerIdentity = %s %s", *who.Arn, *who.Account)
	}

	// A third hop inherits the transitive tag and may not set it again.
	third := client(s, *out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken)
	deeper, err := third.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(deeperRole), RoleSessionName: aws.String("x.y")})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Session(*deeper.Credentials.AccessKeyId)
	if d.Tags["kubernetes-namespace"] != "ns" || d.Tags["eks-cluster-name"] != "" || !slices.Equal(d.Chain, []string{raARN, sess.AssumedRoleARN}) {
		t.Errorf("third hop tags %v chain %v", d.Tags, d.Chain)
	}
	_, err = third.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(deeperRole), RoleSessionName: aws.String("x.y"), Tags: []ststypes.Tag{tag("kubernetes-namespace", "other")}})
	if code, _ := apiCode(t, err); code != "InvalidParameterValue" {
		t.Errorf("overriding a transitive tag: %v", err)
	}
	if got := s.Sessions(targetRole); len(got) != 1 || got[0].AccessKeyID != *out.Credentials.AccessKeyId {
		t.Errorf("Sessions(target) = %+v", got)
	}
}

func TestSecondHopTrustExternalIDTagsDurationAndPolicy(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	s := startChain(t, clk)
	ctx := context.Background()
	okPolicy := `{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}`
	for _, tc := range []struct {
		name     string
		in       sts.AssumeRoleInput
		wantCode string
		wantMsg  string
	}{
		{name: "target trusting the first role is assumed",
			in: sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b")}},
		{name: "target not trusting the first role is denied",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(deeperRole), RoleSessionName: aws.String("a.b")},
			wantCode: "AccessDenied", wantMsg: "User: " + raARN + " is not authorized to perform: sts:AssumeRole on resource: " + deeperRole},
		{name: "pinned external ID is accepted",
			in: sts.AssumeRoleInput{RoleArn: aws.String(pinnedRole), RoleSessionName: aws.String("a.b"), ExternalId: aws.String("eu-central-1/111122223333/c1/ns/sa")}},
		{name: "another service account's external ID is denied",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(pinnedRole), RoleSessionName: aws.String("a.b"), ExternalId: aws.String("eu-central-1/111122223333/c1/ns/other")},
			wantCode: "AccessDenied"},
		{name: "tags on a target without sts:TagSession are denied",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(pinnedRole), RoleSessionName: aws.String("a.b"), ExternalId: aws.String("eu-central-1/111122223333/c1/ns/sa"), Tags: []ststypes.Tag{tag("k", "v")}},
			wantCode: "AccessDenied", wantMsg: "sts:TagSession"},
		{name: "more than an hour is refused for a chained session",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), DurationSeconds: aws.Int32(3601)},
			wantCode: "ValidationError", wantMsg: "role chaining"},
		{name: "a transitive key that is not a passed tag is invalid",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), TransitiveTagKeys: []string{"nope"}},
			wantCode: "ValidationError", wantMsg: "transitiveTagKeys"},
		{name: "a session policy that is not JSON is malformed",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), Policy: aws.String(`{"Version":`)},
			wantCode: "MalformedPolicyDocument"},
		{name: "a session policy without a valid Effect is malformed",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Maybe"}]}`)},
			wantCode: "MalformedPolicyDocument"},
		{name: "a session policy over 2048 characters is invalid",
			in:       sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"` + strings.Repeat("x", 2048) + `"}]}`)},
			wantCode: "ValidationError", wantMsg: "2048"},
		{name: "a valid session policy is accepted",
			in: sts.AssumeRoleInput{RoleArn: aws.String(targetRole), RoleSessionName: aws.String("a.b"), Policy: aws.String(okPolicy)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client(s, raKey, raSecret, raToken).AssumeRole(ctx, &tc.in)
			code, msg, failed := outcome(t, err, tc.wantCode)
			if !failed {
				return
			}
			if code != tc.wantCode || !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("got %s %q, want %s containing %q", code, msg, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// TestTaughtSessionsExpire: a session the fake was taught (a Roles Anywhere
// one) is refused after its expiration, as AWS refuses expired credentials.
func TestTaughtSessionsExpire(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	s := startChain(t, clk)
	clk.Step(time.Hour)
	_, err := client(s, raKey, raSecret, raToken).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if code, _ := apiCode(t, err); code != "ExpiredToken" {
		t.Errorf("expired taught session: %v", err)
	}
}

// TestCredentialsIssuedElsewhereAreAccepted: a key the fake never saw is
// looked up through IssuedElsewhere and then verified like any other.
func TestCredentialsIssuedElsewhereAreAccepted(t *testing.T) {
	s := start(t, func(o *fakests.Options) {
		o.IssuedElsewhere = func(id string) (fakests.Principal, bool) {
			if id != raKey {
				return fakests.Principal{}, false
			}
			return fakests.Principal{AccessKeyID: raKey, SecretAccessKey: raSecret, SessionToken: raToken, ARN: raARN}, true
		}
	})
	who, err := client(s, raKey, raSecret, raToken).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil || *who.Arn != raARN {
		t.Fatalf("GetCallerIdentity = %v, %v", who, err)
	}
	if _, err := client(s, raKey, "wrong/secret/0000000000000000000000000", raToken).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}); err == nil {
		t.Error("a wrong secret for a key issued elsewhere was accepted")
	}
	if _, err := client(s, "ASIAUNKNOWN000000000", raSecret, raToken).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{}); err == nil {
		t.Error("an unknown key was accepted")
	}
}
