package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kube2ra/kube2ra/test/chart"
)

// ClientCreds are the credentials a client inside a pod ended up with.
type ClientCreds struct {
	// AccessKeyID is what the client will sign with.
	AccessKeyID string `json:"AccessKeyId"`
	// SecretAccessKey is compared with what the fake issued.
	SecretAccessKey string `json:"SecretAccessKey"`
	// SessionToken is compared with what the fake issued.
	SessionToken string `json:"SessionToken"`
	// Region is what the client discovered (Go SDK only).
	Region string `json:"Region"`
}

// clientTimeout bounds one client run; the AWS CLI starts in about a second.
const clientTimeout = 60 * time.Second

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  error
)

// python is the interpreter that has boto3 and the AWS CLI v1 (the machine
// image's pyenv). Its shim needs the real HOME, so the path is resolved here,
// outside the pods' clean environments.
func python() (string, error) {
	pythonOnce.Do(func() {
		out, err := exec.Command("python3", "-c", "import sys, boto3, awscli; print(sys.executable)").Output()
		if err != nil {
			pythonErr = fmt.Errorf("harness: python3 with boto3 and awscli (AWS CLI v1) is missing: pip install awscli boto3: %w", err)
			return
		}
		pythonPath = strings.TrimSpace(string(out))
	})
	return pythonPath, pythonErr
}

// clientEnv is the environment of a client in a pod: nothing configured, as
// in a container that relies on the instance metadata service.
func (e *Env) clientEnv() []string {
	home := filepath.Join(e.Dir, "client-home")
	_ = os.MkdirAll(home, 0o700)
	return append(CleanEnviron(), "HOME="+home, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")
}

func (e *Env) runInPod(ctx context.Context, p *Pod, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	cmd := p.Net.Command(ctx, name, args...)
	cmd.Env = append(append(e.clientEnv(), p.Env...), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in pod %s/%s: %w: %s%s", name, p.Namespace, p.Name, err, out, lastLines(stderr.String(), 8))
	}
	return out, nil
}

// GoSDK runs the aws-sdk-go-v2 default chain in the pod (test/e2e/podclient),
// with env added to its environment (AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6).
func (e *Env) GoSDK(ctx context.Context, p *Pod, env ...string) (ClientCreds, error) {
	bin, err := e.podClient()
	if err != nil {
		return ClientCreds{}, err
	}
	out, err := e.runInPod(ctx, p, env, bin)
	var c ClientCreds
	if jerr := json.Unmarshal(out, &c); jerr != nil && err == nil {
		err = fmt.Errorf("podclient printed %q: %w", out, jerr)
	}
	return c, err
}

// GoSDKCallerIdentity runs the Go SDK's default chain in the pod, then
// GetCallerIdentity against the fake STS signed with what it found, and
// returns the credentials and the ARN the fake answered.
func (e *Env) GoSDKCallerIdentity(ctx context.Context, p *Pod, env ...string) (ClientCreds, string, error) {
	bin, err := e.podClient()
	if err != nil {
		return ClientCreds{}, "", err
	}
	out, err := e.runInPod(ctx, p, append([]string{"AWS_ENDPOINT_URL_STS=" + e.STSURL}, env...), bin)
	var r struct {
		ClientCreds
		Arn string `json:"Arn"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil && err == nil {
		err = fmt.Errorf("podclient printed %q: %w", out, jerr)
	}
	return r.ClientCreds, r.Arn, err
}

// CLIv2 runs the AWS CLI v2 (Debian's awscli) `configure export-credentials`.
func (e *Env) CLIv2(ctx context.Context, p *Pod) (ClientCreds, error) {
	out, err := e.runInPod(ctx, p, []string{"AWS_DEFAULT_REGION=" + e.Region()}, DebianAWSCLI, "configure", "export-credentials", "--format", "process")
	if err != nil {
		return ClientCreds{}, err
	}
	var c ClientCreds
	if err := json.Unmarshal(out, &c); err != nil {
		return c, fmt.Errorf("aws v2 printed %q: %w", out, err)
	}
	return c, nil
}

// Boto3 asks botocore's default chain for credentials in the pod.
func (e *Env) Boto3(ctx context.Context, p *Pod) (ClientCreds, error) {
	py, err := python()
	if err != nil {
		return ClientCreds{}, err
	}
	script := `import boto3, json
c = boto3.Session().get_credentials()
if c is None:
    raise SystemExit("no credentials")
f = c.get_frozen_credentials()
print(json.dumps({"AccessKeyId": f.access_key, "SecretAccessKey": f.secret_key, "SessionToken": f.token}))`
	out, err := e.runInPod(ctx, p, nil, py, "-c", script)
	if err != nil {
		return ClientCreds{}, err
	}
	var c ClientCreds
	if err := json.Unmarshal(out, &c); err != nil {
		return c, fmt.Errorf("boto3 printed %q: %w", out, err)
	}
	return c, nil
}

// CLIv1CallerIdentity runs the AWS CLI v1 (botocore) `sts get-caller-identity`
// against the fake STS: the CLI gets credentials from the metadata service,
// signs, and the fake verifies the signature and answers who signed.
func (e *Env) CLIv1CallerIdentity(ctx context.Context, p *Pod) (string, error) {
	py, err := python()
	if err != nil {
		return "", err
	}
	out, err := e.runInPod(ctx, p, nil, py, "-m", "awscli", "sts", "get-caller-identity", "--endpoint-url", e.STSURL, "--region", e.Region(), "--output", "json")
	if err != nil {
		return "", err
	}
	var id struct{ Arn string }
	if err := json.Unmarshal(out, &id); err != nil {
		return "", fmt.Errorf("aws v1 printed %q: %w", out, err)
	}
	return id.Arn, nil
}

// Region is the region clients should find.
func (e *Env) Region() string {
	if e.Flavour == EC2 {
		return EC2Region
	}
	return RARegion
}

// podClient builds test/e2e/podclient once per Env.
func (e *Env) podClient() (string, error) {
	bin := filepath.Join(e.Dir, "podclient")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	return BuildProgram(e.Dir, "podclient", "./test/e2e/podclient")
}

// BuildProgram builds the repository's package pkg (e.g. ./test/e2e/podclient)
// as a static binary named name in dir, for running inside pod namespaces;
// buildArgs (such as -tags) go to go build.
func BuildProgram(dir, name, pkg string, buildArgs ...string) (string, error) {
	root, err := chart.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name)
	args := append(append([]string{"build", "-trimpath"}, buildArgs...), "-o", bin, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: building %s: %w: %s", pkg, err, out)
	}
	return bin, nil
}

func lastLines(s string, n int) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return "\n" + tail(s, n)
}
