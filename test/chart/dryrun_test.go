//go:build integration

package chart_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/kube2ra/kube2ra/test/chart"
)

const (
	// fieldManager names this test's server-side applies.
	fieldManager = "kube2ra-chart-test"
	// apiTimeout bounds each test's conversation with the control plane.
	apiTimeout = 2 * time.Minute
	// crdEstablishTimeout bounds the wait for a stand-in CRD to be served.
	crdEstablishTimeout = 30 * time.Second
)

// standInCRDs are the custom resources the chart can render whose real CRDs
// (cert-manager, Prometheus Operator) are not in the test control plane. They
// accept any content (x-kubernetes-preserve-unknown-fields), so the dry-run
// proves group, version, kind, scope and metadata, not the fields of spec.
var standInCRDs = []struct{ group, kind, plural string }{
	{"cert-manager.io", "Certificate", "certificates"},
	{"monitoring.coreos.com", "ServiceMonitor", "servicemonitors"},
	{"monitoring.coreos.com", "PodMonitor", "podmonitors"},
	{"monitoring.coreos.com", "PrometheusRule", "prometheusrules"},
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installStandInCRDs creates the stand-in CRDs (idempotent) and waits until they are served.
func installStandInCRDs(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	for _, c := range standInCRDs {
		name := c.plural + "." + c.group
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1",
			"kind":       "CustomResourceDefinition",
			"metadata":   map[string]any{"name": name},
			"spec": map[string]any{
				"group": c.group,
				"scope": "Namespaced",
				"names": map[string]any{
					"kind": c.kind, "listKind": c.kind + "List",
					"plural": c.plural, "singular": strings.ToLower(c.kind),
				},
				"versions": []any{map[string]any{
					"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": map[string]any{
						"type": "object", "x-kubernetes-preserve-unknown-fields": true,
					}},
				}},
			},
		}}
		if _, err := dyn.Resource(crdResource).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating the stand-in CRD %s: %v", name, err)
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, crdEstablishTimeout, true, func(ctx context.Context) (bool, error) {
			got, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conditions, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, cond := range conditions {
				m, _ := cond.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("the stand-in CRD %s was not established within %s: %v", name, crdEstablishTimeout, err)
		}
	}
}

// ensureNamespace creates ns unless it exists (kube-apiserver makes kube-system itself).
func ensureNamespace(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
}

// applier server-side-applies rendered objects to the control plane.
type applier struct {
	dyn    dynamic.Interface                       // talks to the API server
	mapper *restmapper.DeferredDiscoveryRESTMapper // kind -> resource, from discovery
}

func newApplier(ctx context.Context, t *testing.T) *applier {
	t.Helper()
	cfg := cp.AdminConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(ctx, t, client, chart.Namespace)
	installStandInCRDs(ctx, t, dyn)
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}
}

// apply server-side-applies obj with strict field validation; dryRun keeps it out of etcd.
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	gvk := obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("the API server does not serve %s: %w", gvk, err)
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	res := dynamic.ResourceInterface(a.dyn.Resource(mapping.Resource))
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			return fmt.Errorf("%s %s has no metadata.namespace: every namespaced template must set it", gvk.Kind, obj.GetName())
		}
		res = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	} else if obj.GetNamespace() != "" {
		return fmt.Errorf("cluster-scoped %s %s has metadata.namespace %q", gvk.Kind, obj.GetName(), obj.GetNamespace())
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: &force, FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if _, err := res.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts); err != nil {
		return fmt.Errorf("applying %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

// delete removes obj (for cleanup of objects applied for real).
func (a *applier) delete(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace()).Delete(ctx, obj.GetName(), metav1.DeleteOptions{})
	}
	return a.dyn.Resource(mapping.Resource).Delete(ctx, obj.GetName(), metav1.DeleteOptions{})
}

// TestRenderedManifestsPassServerSideDryRun sends every object of every value
// set to the real kube-apiserver as a server-side apply with dryRun=All and
// strict field validation: defaulting, validation and admission all run, an
// unknown or duplicate field fails, and nothing is stored.
func TestRenderedManifestsPassServerSideDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	a := newApplier(ctx, t)
	for _, set := range valueSets(t) {
		t.Run(set.name, func(t *testing.T) {
			objects := renderObjects(t, set)
			kinds := map[string]bool{}
			for _, obj := range objects {
				kinds[obj.GetKind()] = true
				if err := a.apply(ctx, obj, true); err != nil {
					t.Errorf("the control plane refused the rendered manifest: %v", err)
				}
			}
			for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "DaemonSet"} {
				if !kinds[kind] {
					t.Errorf("value set %s renders no %s", set.name, kind)
				}
			}
		})
	}
	// Dry-run means dry: nothing may have reached etcd.
	client, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.AppsV1().DaemonSets(chart.Namespace).Get(ctx, chart.ReleaseName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after dry-runs, getting DaemonSet %s/%s returned %v, want NotFound", chart.Namespace, chart.ReleaseName, err)
	}
}

// TestHelmInstallDryRunShowsHowToUseIt has helm itself talk to the control
// plane (install --dry-run=server: discovery, existing-release checks,
// rendering) and checks the NOTES tell the operator how to annotate a pod and
// a namespace and how to check the result.
func TestHelmInstallDryRunShowsHowToUseIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	newApplier(ctx, t) // namespace and stand-in CRDs
	for _, set := range valueSets(t) {
		t.Run(set.name, func(t *testing.T) {
			notes := installNotes(ctx, t, set.file)
			for _, want := range []string{
				"iam.amazonaws.com/role: app-reader",
				`kubectl annotate namespace NAMESPACE 'iam.amazonaws.com/allowed-roles=["app-*"]'`,
				"kubectl exec -n NAMESPACE POD -- curl -s 169.254.169.254/latest/meta-data/iam/security-credentials/",
				"rollout status daemonset/" + chart.ReleaseName,
			} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES lack %q:\n%s", want, notes)
				}
			}
		})
	}
}

// installNotes runs helm install --dry-run=server against the control plane
// with the values file (none when empty) and further helm arguments, and
// returns the NOTES helm printed.
func installNotes(ctx context.Context, t *testing.T, valuesFile string, helmArgs ...string) string {
	t.Helper()
	helm, err := chart.EnsureHelm(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := chart.ChartDir()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"install", chart.ReleaseName, dir, "--namespace", chart.Namespace, "--dry-run=server", "--kubeconfig", cp.Kubeconfig}
	if valuesFile != "" {
		args = append(args, "--values", valuesFile)
	}
	args = append(args, helmArgs...)
	cmd := exec.CommandContext(ctx, helm, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	_, notes, ok := strings.Cut(string(out), "\nNOTES:\n")
	if !ok {
		t.Fatalf("helm printed no NOTES:\n%s", out)
	}
	return notes
}

// renderedIssuerKind is the kind of issuer the rendered node certificate
// comes from: the Certificate's issuerRef, or the csi-driver volume's
// issuer-kind; "" when neither is rendered.
func renderedIssuerKind(t *testing.T, manifest []byte) string {
	t.Helper()
	objects, err := chart.Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if c := chart.Find(objects, "Certificate", chart.ReleaseName+"-node-certificate"); c != nil {
		kind, _, _ := unstructured.NestedString(c.Object, "spec", "issuerRef", "kind")
		return kind
	}
	ds := chart.Find(objects, "DaemonSet", chart.ReleaseName)
	if ds == nil {
		t.Fatal("no DaemonSet rendered")
	}
	volumes, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "volumes")
	for _, v := range volumes {
		if kind, ok, _ := unstructured.NestedString(v.(map[string]any), "csi", "volumeAttributes", "csi.cert-manager.io/issuer-kind"); ok {
			return kind
		}
	}
	return ""
}

// TestHelmInstallWarnsAboutClusterIssuers: the node certificate's issuer
// defaults to a namespaced Issuer; a cluster-scoped one (ClusterIssuer,
// AWSPCAClusterIssuer), which any namespace can ask for a certificate the
// trust anchor accepts, makes helm install print a warning that says the
// risk and the fix. Only the certificate source in use counts.
func TestHelmInstallWarnsAboutClusterIssuers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	newApplier(ctx, t) // namespace and stand-in CRDs
	const certManager, csi = "rolesAnywhere.certificate.certManager.issuerRef.", "rolesAnywhere.certificate.csiDriver.issuerRef."
	cases := []struct {
		name, values string
		set          []string
		wantKind     string
	}{
		{"cert-manager Certificate, default kind", "rolesanywhere-certmanager", nil, "Issuer"},
		{"cert-manager Certificate from a ClusterIssuer", "rolesanywhere-clusterissuer", nil, "ClusterIssuer"},
		{"cert-manager Certificate from AWS Private CA's cluster issuer", "rolesanywhere-certmanager",
			[]string{certManager + "kind=AWSPCAClusterIssuer", certManager + "group=awspca.cert-manager.io"}, "AWSPCAClusterIssuer"},
		{"csi-driver, Issuer", "rolesanywhere-csi", nil, "Issuer"},
		{"csi-driver, default kind", "rolesanywhere-certmanager",
			[]string{"rolesAnywhere.certificate.certManager.enabled=false", "rolesAnywhere.certificate.csiDriver.enabled=true", csi + "name=kube2ra-nodes"}, "Issuer"},
		{"csi-driver from a ClusterIssuer", "rolesanywhere-csi", []string{csi + "kind=ClusterIssuer"}, "ClusterIssuer"},
		{"existing Secret, an unused ClusterIssuer setting", "rolesanywhere-secret", []string{certManager + "kind=ClusterIssuer", csi + "kind=ClusterIssuer"}, ""},
		{"STS", "ec2-sts", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file, err := chart.ValuesFile(c.values)
			if err != nil {
				t.Fatal(err)
			}
			var args []string
			for _, s := range c.set {
				args = append(args, "--set", s)
			}
			rctx, rcancel := context.WithTimeout(ctx, renderTimeout)
			defer rcancel()
			manifest, err := chart.Render(rctx, file, args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := renderedIssuerKind(t, manifest); got != c.wantKind {
				t.Fatalf("the node certificate's issuer kind is %q, want %q", got, c.wantKind)
			}
			notes := installNotes(ctx, t, file, args...)
			warned := strings.Contains(notes, "WARNING")
			if cluster := strings.HasSuffix(c.wantKind, "ClusterIssuer"); warned != cluster {
				t.Fatalf("issuer kind %q: NOTES warn = %v, want %v:\n%s", c.wantKind, warned, cluster, notes)
			}
			if !warned {
				return
			}
			for _, want := range []string{c.wantKind, "default approver", "every role in the profile", "bypassing namespace policy",
				"an Issuer in " + chart.Namespace + " whose CA signs nothing else", "approver-policy", "agent's ServiceAccount"} {
				if !strings.Contains(notes, want) {
					t.Errorf("the ClusterIssuer warning lacks %q:\n%s", want, notes)
				}
			}
		})
	}
}
