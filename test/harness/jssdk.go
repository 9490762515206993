package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kube2ra/kube2ra/test/chart"
)

// jsSDKPackage is the package whose pinned version names the install
// directory; hack/install-test-deps.sh reads the same field.
const jsSDKPackage = "@aws-sdk/credential-providers"

// JSSDKResult is what test/e2e/jsclient printed: the credentials the
// JavaScript SDK's default chain found and the ARN the fake STS verified
// GetCallerIdentity's signature for.
type JSSDKResult struct {
	ClientCreds
	// Arn is GetCallerIdentity's answer: the assumed-role session that signed.
	Arn string `json:"Arn"`
	// Error is the SDK's error when the client failed.
	Error string `json:"Error"`
}

// JSSDKDir is where hack/install-test-deps.sh js-sdk installed the AWS SDK
// for JavaScript v3 pinned in hack/js-sdk/package.json; it fails, naming
// the command that installs it, when it is not there.
func JSSDKDir() (string, error) {
	root, err := chart.RepoRoot()
	if err != nil {
		return "", err
	}
	manifest := filepath.Join(root, "hack", "js-sdk", "package.json")
	b, err := os.ReadFile(manifest)
	if err != nil {
		return "", fmt.Errorf("harness: reading the JavaScript SDK's pins: %w", err)
	}
	var pkg struct{ Dependencies map[string]string }
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "", fmt.Errorf("harness: %s: %w", manifest, err)
	}
	version := pkg.Dependencies[jsSDKPackage]
	if version == "" {
		return "", fmt.Errorf("harness: %s pins no %s", manifest, jsSDKPackage)
	}
	dir := filepath.Join(chart.CacheDir(), "npm", "aws-sdk-js-v3-"+version)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", jsSDKPackage, "package.json")); err != nil {
		return "", fmt.Errorf("harness: the AWS SDK for JavaScript v3 %s is not installed in %s: run hack/install-test-deps.sh js-sdk (or make test-deps): %w", version, dir, err)
	}
	return dir, nil
}

// JSSDK runs test/e2e/jsclient in the pod with node: the JavaScript SDK's
// default chain, then GetCallerIdentity against the fake STS, with env
// added to its environment.
func (e *Env) JSSDK(ctx context.Context, p *Pod, env ...string) (JSSDKResult, error) {
	dir, err := JSSDKDir()
	if err != nil {
		return JSSDKResult{}, err
	}
	root, err := chart.RepoRoot()
	if err != nil {
		return JSSDKResult{}, err
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return JSSDKResult{}, fmt.Errorf("harness: node is not on PATH: run hack/install-test-deps.sh js-sdk (nodejs 20 or later): %w", err)
	}
	base := []string{
		"NODE_PATH=" + filepath.Join(dir, "node_modules"),
		"NODE_OPTIONS=",
		"AWS_REGION=" + e.Region(),
		"AWS_ENDPOINT_URL_STS=" + e.STSURL,
	}
	out, err := e.runInPod(ctx, p, append(base, env...), node, filepath.Join(root, "test", "e2e", "jsclient", "client.js"))
	var r JSSDKResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return r, errors.Join(err, fmt.Errorf("jsclient printed %q: %w", out, jerr))
	}
	if err == nil && r.Error != "" {
		err = errors.New(r.Error)
	}
	return r, err
}
