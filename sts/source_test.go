package sts

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakeimds"
	"github.com/kube2ra/kube2ra/test/fakeaws/fakests"
)

const (
	account  = "111122223333"
	nodeRole = "node-instance-role"
	region   = "eu-west-1"
	podRole  = "arn:aws:iam::" + account + ":role/app"
)

// isolate keeps the developer's AWS environment out of the SDK's chain.
func isolate(t *testing.T) {
	t.Helper()
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
}

// node is an EC2 instance (the fake metadata service, with the instance
// role's credentials) and the fake STS that trusts that role for podRole.
func node(t *testing.T) (*fakeimds.Server, *fakests.Server) {
	t.Helper()
	isolate(t)
	creds := fakeimds.Credentials{AccessKeyID: "ASIANODE0000000000", SecretAccessKey: "node-secret", Token: "node-token", Expiration: time.Now().Add(6 * time.Hour)}
	imds := fakeimds.New(fakeimds.Options{RoleName: nodeRole, AccountID: account, Region: region, Credentials: creds})
	if err := imds.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = imds.Stop() })
	nodeARN := "arn:aws:sts::" + account + ":assumed-role/" + nodeRole + "/i-0fa4e1c0ffee12345"
	fake, err := fakests.Start(fakests.Options{
		Region:     region,
		Principals: []fakests.Principal{{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, SessionToken: creds.Token, ARN: nodeARN}},
		Roles:      []fakests.Role{{ARN: podRole, Trust: []string{"arn:aws:iam::" + account + ":role/" + nodeRole}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	return imds, fake
}

// TestCheckLearnsRegionAndBaseARNFromTheInstance: with no --region, the
// region and the base role ARN come from the instance, and AssumeRole is
// signed with the instance role's credentials from the metadata service.
func TestCheckLearnsRegionAndBaseARNFromTheInstance(t *testing.T) {
	imds, fake := node(t)
	ctx := context.Background()
	src, err := NewSource(ctx, Config{Endpoint: fake.URL(), MetadataURL: imds.URL(), SessionDuration: time.Hour}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(ctx, credentials.Request{RoleARN: podRole, SessionName: "ns.pod"}); err == nil || src.Ready() == nil {
		t.Fatalf("before Check: Fetch %v, Ready %v; want both to refuse", err, src.Ready())
	}
	if err := src.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if src.Region() != region {
		t.Errorf("region %q, want the instance's %q", src.Region(), region)
	}
	if want := "arn:aws:iam::" + account + ":role/"; src.BaseRoleARN() != want {
		t.Errorf("base role ARN %q, want %q from the instance profile", src.BaseRoleARN(), want)
	}
	creds, err := src.Fetch(ctx, credentials.Request{RoleARN: podRole, SessionName: "ns.pod"})
	if err != nil {
		t.Fatal(err)
	}
	if sess, ok := fake.Session(creds.AccessKeyID); !ok || sess.RoleARN != podRole {
		t.Errorf("credentials %s were not issued by the fake for %s: %+v", creds.AccessKeyID, podRole, sess)
	}
	if src.Name() != "sts" || src.Ready() != nil {
		t.Errorf("Name %q, Ready %v after Check", src.Name(), src.Ready())
	}
}

// TestCheckSaysWhatIsMissing: no region anywhere, or node credentials that
// cannot be resolved, fail Check with the flag to set.
func TestCheckSaysWhatIsMissing(t *testing.T) {
	ctx := context.Background()
	t.Run("no region and no metadata service", func(t *testing.T) {
		isolate(t)
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		src, err := NewSource(ctx, Config{}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Check(ctx); err == nil || !strings.Contains(err.Error(), "--region") {
			t.Errorf("Check = %v, want an error naming --region", err)
		}
	})
	t.Run("the STS client's own refusal, said once", func(t *testing.T) {
		imds, fake := node(t)
		src, err := NewSource(ctx, Config{Endpoint: fake.URL(), MetadataURL: imds.URL(), SessionDuration: time.Second}, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		err = src.Check(ctx)
		if err == nil || !strings.HasPrefix(err.Error(), "sts: session duration") || !strings.Contains(err.Error(), "--iam-role-session-ttl") {
			t.Errorf("Check = %v, want one \"sts:\" and the flag to set", err)
		}
	})
	t.Run("node credentials unreachable", func(t *testing.T) {
		isolate(t)
		src, err := NewSource(ctx, Config{Region: region, MetadataURL: "http://127.0.0.1:9"}, Deps{CheckTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = src.Check(ctx)
		if err == nil || !strings.Contains(err.Error(), "node's own credentials") {
			t.Errorf("Check = %v, want an error about the node's own credentials", err)
		}
		var ce *credentials.Error
		if _, ferr := src.Fetch(ctx, credentials.Request{RoleARN: podRole, SessionName: "ns.pod"}); !errors.As(ferr, &ce) || ce.Kind != credentials.KindUnavailable {
			t.Errorf("Fetch after a failed Check = %v, want unavailable", ferr)
		}
	})
}
