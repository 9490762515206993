//go:build e2e

package fakests_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// awsCLI runs the AWS CLI (a signer nobody here wrote) against the fake
// with the given credentials and nothing from the machine's AWS setup.
func awsCLI(t *testing.T, url, key, secret, token string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		t.Fatal("the AWS CLI is needed: apt-get install awscli (v2) or pip install awscli (v1)")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--endpoint-url", url, "--region", region, "--output", "json"}, args...)...)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ACCESS_KEY_ID=" + key,
		"AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_MAX_ATTEMPTS=1",
	}
	if token != "" {
		env = append(env, "AWS_SESSION_TOKEN="+token)
	}
	// pyenv shims need to find their root.
	for _, v := range []string{"PYENV_ROOT", "PYENV_VERSION"} {
		if val, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+val)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAWSCLIAgainstTheFake(t *testing.T) {
	s := start(t)

	out, err := awsCLI(t, s.URL(), nodeKey, nodeSecret, "", "sts", "get-caller-identity")
	if err != nil {
		t.Fatalf("get-caller-identity: %v\n%s", err, out)
	}
	var who struct{ Arn, Account, UserId string }
	if err := json.Unmarshal([]byte(out), &who); err != nil || who.Arn != nodeARN || who.Account != account {
		t.Fatalf("get-caller-identity answered %s (%v)", out, err)
	}

	out, err = awsCLI(t, s.URL(), nodeKey, nodeSecret, "", "sts", "assume-role",
		"--role-arn", tagRole, "--role-session-name", "team-a.web-0", "--duration-seconds", "900",
		"--tags", "Key=kubernetes-namespace,Value=team-a")
	if err != nil {
		t.Fatalf("assume-role: %v\n%s", err, out)
	}
	var assumed struct {
		Credentials struct{ AccessKeyId, SecretAccessKey, SessionToken, Expiration string }
	}
	if err := json.Unmarshal([]byte(out), &assumed); err != nil {
		t.Fatalf("assume-role answered %s: %v", out, err)
	}
	c := assumed.Credentials
	if sess, ok := s.Session(c.AccessKeyId); !ok || sess.Tags["kubernetes-namespace"] != "team-a" {
		t.Errorf("session %+v", sess)
	}

	out, err = awsCLI(t, s.URL(), c.AccessKeyId, c.SecretAccessKey, c.SessionToken, "sts", "get-caller-identity")
	if err != nil {
		t.Fatalf("get-caller-identity with the issued session: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"arn:aws:sts::111122223333:assumed-role/tagged/team-a.web-0"`) {
		t.Errorf("who am I with the issued session: %s", out)
	}

	out, err = awsCLI(t, s.URL(), nodeKey, "wrong-secret", "", "sts", "get-caller-identity")
	if err == nil || !strings.Contains(out, "SignatureDoesNotMatch") {
		t.Errorf("a wrong secret: %v\n%s", err, out)
	}
	out, err = awsCLI(t, s.URL(), nodeKey, nodeSecret, "", "sts", "assume-role", "--role-arn", extRole, "--role-session-name", "x.y")
	if err == nil || !strings.Contains(out, "AccessDenied") || !strings.Contains(out, "is not authorized to perform: sts:AssumeRole") {
		t.Errorf("a role needing an external ID: %v\n%s", err, out)
	}
}
