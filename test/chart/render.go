// Package chart renders the kube2ra Helm chart (charts/kube2ra) with the
// pinned helm binary, so tests can use exactly what the chart installs: the
// chart's own tests diff and dry-run the manifests, and the agent's
// integration tests bind the RBAC rules the chart renders instead of a copy.
//
// helm comes from the Go module proxy (`go install helm.sh/helm/v3/cmd/helm@HelmVersion`)
// into $KUBE2RA_CACHE/bin (default ~/.cache/kube2ra/bin), the same place
// hack/chart-test.sh uses; EnsureHelm installs it there when it is missing.
package chart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const (
	// HelmVersion is the helm release the chart is tested with; hack/chart-test.sh pins the same.
	HelmVersion = "v3.22.0"
	// ReleaseName is the release name Render uses, so resource names are "kube2ra".
	ReleaseName = "kube2ra"
	// Namespace is the release namespace Render uses, where the README installs the agent.
	Namespace = "kube-system"

	// modulePath identifies the repository root when searching upwards for go.mod.
	modulePath = "github.com/kube2ra/kube2ra"
	// helmInstallTimeout bounds `go install` of helm (about 2.5 minutes on 2 cores).
	helmInstallTimeout = 8 * time.Minute
	// helmRunTimeout bounds one `helm template` run.
	helmRunTimeout = time.Minute
)

// CacheDir is $KUBE2RA_CACHE, else $XDG_CACHE_HOME/kube2ra, else
// ~/.cache/kube2ra: the rule of the hack/ scripts and test/controlplane.
func CacheDir() string {
	if d := os.Getenv("KUBE2RA_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(base, "kube2ra")
}

// HelmPath is where the pinned helm binary lives: $KUBE2RA_HELM if set, else
// CacheDir()/bin/helm.
func HelmPath() string {
	if p := os.Getenv("KUBE2RA_HELM"); p != "" {
		return p
	}
	return filepath.Join(CacheDir(), "bin", "helm")
}

// EnsureHelm returns HelmPath, first installing helm HelmVersion there from
// the Go module proxy if no executable is there. The install goes through a
// temporary directory and a rename, so concurrent callers never see half a file.
func EnsureHelm(ctx context.Context) (string, error) {
	path := HelmPath()
	if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
		return path, nil
	}
	if os.Getenv("KUBE2RA_HELM") != "" {
		return "", fmt.Errorf("KUBE2RA_HELM=%s is not an executable file: unset it to use the pinned helm, or point it at one", path)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("helm is missing at %s and no go toolchain is on PATH to install it: run hack/chart-test.sh or `GOBIN=%s go install helm.sh/helm/v3/cmd/helm@%s`: %w",
			path, filepath.Dir(path), HelmVersion, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("creating the helm directory %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".helm-install-")
	if err != nil {
		return "", fmt.Errorf("creating a temporary directory for installing helm: %w", err)
	}
	defer os.RemoveAll(tmp)

	ctx, cancel := context.WithTimeout(ctx, helmInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", "helm.sh/helm/v3/cmd/helm@"+HelmVersion)
	// helm has its own go.mod; GOFLAGS from the caller (e.g. -mod=vendor) must not leak in.
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("installing helm %s from the Go module proxy failed (run hack/chart-test.sh to retry by hand): %w\n%s",
			HelmVersion, err, tail(out, 2000))
	}
	if err := os.Rename(filepath.Join(tmp, "helm"), path); err != nil {
		return "", fmt.Errorf("moving the freshly built helm to %s: %w", path, err)
	}
	return path, nil
}

// RepoRoot finds the repository root by walking up from the working directory
// to the go.mod of module github.com/kube2ra/kube2ra.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("reading the working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module "+modulePath)) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory: run the tests from inside the kube2ra repository", modulePath)
		}
		dir = parent
	}
}

// ChartDir is the absolute path of charts/kube2ra.
func ChartDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "kube2ra"), nil
}

// ValuesFile is the absolute path of the chart's CI value set NAME
// (charts/kube2ra/ci/NAME-values.yaml), e.g. "ec2-sts",
// "rolesanywhere-certmanager", "rolesanywhere-secret".
func ValuesFile(name string) (string, error) {
	dir, err := ChartDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "ci", name+"-values.yaml")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no value set %q in %s: %w", name, filepath.Join(dir, "ci"), err)
	}
	return path, nil
}

// KubeVersion is the Kubernetes version Render renders for unless told
// otherwise: the one the tests' API server and kubelet run
// (hack/build-kube.sh's KUBE_VERSION).
const KubeVersion = "v1.36.3"

// Render runs `helm template` for release ReleaseName in Namespace with the
// values file (none when empty) and any further helm arguments (e.g.
// "--set", "k=v"), and returns the manifest. A helm failure (schema or
// template error) is returned with helm's message.
func Render(ctx context.Context, valuesFile string, helmArgs ...string) ([]byte, error) {
	helm, err := EnsureHelm(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := ChartDir()
	if err != nil {
		return nil, err
	}
	args := []string{"template", ReleaseName, dir, "--namespace", Namespace}
	if valuesFile != "" {
		args = append(args, "--values", valuesFile)
	}
	if !slices.Contains(helmArgs, "--kube-version") {
		// Offline, helm assumes Kubernetes 1.20; the chart renders for
		// the version it meets (status.hostIPs from 1.29).
		args = append(args, "--kube-version", KubeVersion)
	}
	args = append(args, helmArgs...)

	ctx, cancel := context.WithTimeout(ctx, helmRunTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A user's helm configuration must not change what the chart renders.
	helmHome := filepath.Join(os.TempDir(), "kube2ra-helm")
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
		"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
		"HELM_DATA_HOME="+filepath.Join(helmHome, "data"))
	if err := cmd.Run(); err != nil {
		return nil, &RenderError{Args: args, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}

// RenderError is a failed `helm template`: Stderr holds helm's message (a
// schema violation or a template's fail text).
type RenderError struct {
	// Args are helm's arguments.
	Args []string
	// Stderr is what helm printed.
	Stderr string
	// Err is the process error.
	Err error
}

func (e *RenderError) Error() string {
	return fmt.Sprintf("helm %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

func (e *RenderError) Unwrap() error { return e.Err }

// Objects splits a rendered manifest into objects, skipping empty documents.
func Objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objects []*unstructured.Unstructured
	for {
		var raw map[string]any
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objects, nil
			}
			return nil, fmt.Errorf("decoding the rendered manifest: %w", err)
		}
		if len(raw) == 0 {
			continue
		}
		objects = append(objects, &unstructured.Unstructured{Object: raw})
	}
}

// Find returns the rendered object of the given kind and name, or nil.
func Find(objects []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Convert decodes an unstructured object into a typed one (e.g. *appsv1.DaemonSet).
func Convert(u *unstructured.Unstructured, into any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		return fmt.Errorf("converting the rendered %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// RenderedAgentRBAC renders the chart with valuesFile (chart defaults when
// empty) and returns the rules of the agent's ClusterRole, for binding exactly
// what the chart grants.
func RenderedAgentRBAC(valuesFile string) ([]rbacv1.PolicyRule, error) {
	return renderedRules(valuesFile, "ClusterRole")
}

// RenderedAgentNamespaceRBAC is like RenderedAgentRBAC for the Role the chart
// creates in the release namespace: get, list and watch of the agent's own
// DaemonSet only (resourceNames ReleaseName; list and watch need the field
// selector metadata.name=ReleaseName), in Namespace.
func RenderedAgentNamespaceRBAC(valuesFile string) ([]rbacv1.PolicyRule, error) {
	return renderedRules(valuesFile, "Role")
}

func renderedRules(valuesFile, kind string) ([]rbacv1.PolicyRule, error) {
	ctx, cancel := context.WithTimeout(context.Background(), helmInstallTimeout+helmRunTimeout)
	defer cancel()
	manifest, err := Render(ctx, valuesFile)
	if err != nil {
		return nil, err
	}
	objects, err := Objects(manifest)
	if err != nil {
		return nil, err
	}
	obj := Find(objects, kind, ReleaseName)
	if obj == nil {
		return nil, fmt.Errorf("the chart rendered with %q has no %s %s: is rbac.create false?", valuesFile, kind, ReleaseName)
	}
	var role rbacv1.ClusterRole // Role and ClusterRole share the rules field
	if err := Convert(&unstructured.Unstructured{Object: map[string]any{"rules": obj.Object["rules"]}}, &role); err != nil {
		return nil, err
	}
	return role.Rules, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
