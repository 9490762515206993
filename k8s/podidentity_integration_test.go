//go:build integration

package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/test/chart"
)

// podIdentityRBAC binds the ClusterRole the chart renders with pod
// identity on to the agent, so these tests prove those rules are enough.
var podIdentityRBAC = sync.OnceValue(func() error {
	file, err := chart.ValuesFile("pod-identity")
	if err != nil {
		return err
	}
	rules, err := chart.RenderedAgentRBAC(file)
	if err != nil {
		return err
	}
	ctx := context.Background()
	name := agentRoleName + "-pod-identity"
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kube2ra", Namespace: "kube-system"}},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = nil
	}
	return err
})

// tokenDoor is the token door's k8s parts, as cmd/kube2ra wires them, all
// running as the agent.
type tokenDoor struct {
	watcher  *Watcher
	accounts *ServiceAccounts
	resolver *RoleResolver
	auth     *PodAuthenticator
	roles    *ServiceAccountRoles
	keys     *APIServerKeys
	verifier *TokenVerifier
}

// doorOptions change how startTokenDoor wires the door; the zero value is
// cmd/kube2ra's wiring.
type doorOptions struct {
	// clock is the key source's and the verifier's clock; nil is the real one.
	clock clock.PassiveClock
	// onRead, when set, is called with each path the key source reads.
	onRead func(path string)
}

func startTokenDoor(t *testing.T, node string, opts doorOptions) *tokenDoor {
	t.Helper()
	if err := podIdentityRBAC(); err != nil {
		t.Fatalf("binding the chart's pod-identity rules: %v", err)
	}
	c := agentAPI(t)
	w := startWatcher(t, node, 300*time.Millisecond)
	accounts, err := NewServiceAccounts(c, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); accounts.Shutdown() })
	accounts.Start(ctx)
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if err := accounts.WaitForSync(syncCtx, SyncLog{}); err != nil {
		t.Fatal(err)
	}
	keys := NewAPIServerKeys(func(ctx context.Context, path string) ([]byte, error) {
		if opts.onRead != nil {
			opts.onRead(path)
		}
		return c.GetPath(ctx, path)
	}, opts.clock, testLogger())
	verifier, err := NewTokenVerifier(TokenVerifierOptions{Keys: keys, Clock: opts.clock})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewPodAuthenticator(verifier, w, accounts, node)
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := NewRoleResolver(w, ResolverOptions{BaseRoleARN: StaticBaseARN(testBase), NamespaceRestrictions: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	roles, err := NewServiceAccountRoles(resolver, accounts, "")
	if err != nil {
		t.Fatal(err)
	}
	return &tokenDoor{watcher: w, accounts: accounts, resolver: resolver, auth: auth, roles: roles, keys: keys, verifier: verifier}
}

func createServiceAccount(t *testing.T, ns, name string, ann map[string]string) {
	t.Helper()
	_, err := admin.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// podToken asks the TokenRequest API for a token bound to pod (what the
// kubelet does for a projected serviceAccountToken volume); pod nil asks
// for an unbound one.
func podToken(t *testing.T, ns, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	return podTokenLasting(t, ns, sa, pod, audience, 10*time.Minute) // the TokenRequest minimum
}

// podTokenLasting is podToken with a chosen lifetime.
func podTokenLasting(t *testing.T, ns, sa string, pod *corev1.Pod, audience string, lifetime time.Duration) string {
	t.Helper()
	tokenSeconds := int64(lifetime / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: &tokenSeconds}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	got, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return got.Status.Token
}

func podOf(ns, name, node, sa string, ann map[string]string, hostNetwork bool) *corev1.Pod {
	p := newPod(ns, name, node, ann)
	p.Spec.ServiceAccountName = sa
	p.Spec.HostNetwork = hostNetwork
	return p
}

// TestIntegrationTokenDoorWithRealTokens: tokens the real kube-apiserver
// issues through the TokenRequest API, verified against its OIDC discovery
// keys, name their pod; the role comes from the ServiceAccount (or the pod)
// through the namespace policy; every kind of wrong token is refused.
func TestIntegrationTokenDoorWithRealTokens(t *testing.T) {
	ctx := context.Background()
	const ns, node, otherNode = "pi-tokens", "pi-node-a", "pi-node-b"
	createNamespace(t, ns, ptr(`["web-role", "irsa-role", "pod-role"]`))
	// Nodes, so the API server puts node claims in the tokens of their pods.
	createNode(t, ctx, node)
	createNode(t, ctx, otherNode)
	createServiceAccount(t, ns, "web", map[string]string{DefaultRoleKey: "web-role"})
	createServiceAccount(t, ns, "irsa", map[string]string{IRSARoleKey: testBase + "irsa-role"})
	createServiceAccount(t, ns, "denied", map[string]string{DefaultRoleKey: "admin-role"})
	createServiceAccount(t, ns, "plain", nil)
	d := startTokenDoor(t, node, doorOptions{})

	web := runPod(t, ctx, podOf(ns, "web", node, "web", nil, false), corev1.PodRunning, "10.77.0.1")
	irsa := runPod(t, ctx, podOf(ns, "irsa", node, "irsa", nil, false), corev1.PodRunning, "10.77.0.2")
	hostNet := runPod(t, ctx, podOf(ns, "hostnet", node, "web", nil, true), corev1.PodRunning, "192.0.2.10")
	podWins := runPod(t, ctx, podOf(ns, "podwins", node, "web", map[string]string{DefaultRoleKey: "pod-role"}, false), corev1.PodRunning, "10.77.0.3")
	denied := runPod(t, ctx, podOf(ns, "denied", node, "denied", nil, false), corev1.PodRunning, "10.77.0.4")
	plain := runPod(t, ctx, podOf(ns, "plain", node, "plain", nil, false), corev1.PodRunning, "10.77.0.5")
	elsewhere := runPod(t, ctx, podOf(ns, "elsewhere", otherNode, "web", nil, false), corev1.PodRunning, "10.77.1.1")
	eventually(t, "the pods are cached", func() error {
		for _, p := range []*corev1.Pod{web, irsa, hostNet, podWins, denied, plain} {
			if _, ok, _ := d.watcher.pods.GetStore().GetByKey(ns + "/" + p.Name); !ok {
				return errors.New(p.Name + " not cached")
			}
		}
		return nil
	})

	served := []struct {
		name string
		pod  *corev1.Pod
		role string
	}{
		{"the ServiceAccount's iam.amazonaws.com/role", web, testBase + "web-role"},
		{"the ServiceAccount's IRSA annotation", irsa, testBase + "irsa-role"},
		{"a host-network pod, by its token alone", hostNet, testBase + "web-role"},
		{"the pod's own annotation wins over its ServiceAccount's", podWins, testBase + "pod-role"},
	}
	for _, tt := range served {
		t.Run("served: "+tt.name, func(t *testing.T) {
			pod, err := d.auth.AuthenticatePod(ctx, podToken(t, ns, tt.pod.Spec.ServiceAccountName, tt.pod, DefaultPodIdentityAudience))
			if err != nil {
				t.Fatalf("AuthenticatePod: %v", err)
			}
			if pod.UID != tt.pod.UID {
				t.Fatalf("authenticated %s (%s), want %s", pod.Key(), pod.UID, tt.pod.Name)
			}
			role, err := d.roles.ResolveRole(ctx, pod)
			if err != nil || role.ARN != tt.role {
				t.Fatalf("role %q, %v; want %s", role.ARN, err, tt.role)
			}
		})
	}

	t.Run("a role the namespace does not allow is denied", func(t *testing.T) {
		pod, err := d.auth.AuthenticatePod(ctx, podToken(t, ns, "denied", denied, DefaultPodIdentityAudience))
		if err != nil {
			t.Fatal(err)
		}
		var denial *DenialError
		if _, err := d.roles.ResolveRole(ctx, pod); !errors.As(err, &denial) || denial.Reason != DeniedByNamespace {
			t.Fatalf("ResolveRole: %v, want a namespace-policy denial", err)
		}
	})
	t.Run("no role on pod or ServiceAccount is ErrNoRole", func(t *testing.T) {
		pod, err := d.auth.AuthenticatePod(ctx, podToken(t, ns, "plain", plain, DefaultPodIdentityAudience))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.roles.ResolveRole(ctx, pod); !errors.Is(err, ErrNoRole) {
			t.Fatalf("ResolveRole: %v, want ErrNoRole", err)
		}
	})

	webToken := podToken(t, ns, "web", web, DefaultPodIdentityAudience)
	refused := []struct {
		name  string
		token func(t *testing.T) string
		want  TokenRejection
	}{
		{"a token for STS's audience", func(t *testing.T) string { return podToken(t, ns, "web", web, "sts.amazonaws.com") }, TokenWrongAudience},
		{"a token bound to no pod", func(t *testing.T) string { return podToken(t, ns, "web", nil, DefaultPodIdentityAudience) }, TokenNotPodBound},
		{"a token of a pod on another node", func(t *testing.T) string {
			return podToken(t, ns, "web", elsewhere, DefaultPodIdentityAudience)
		}, TokenPodNotHere},
		{"a tampered token", func(*testing.T) string { return webToken[:len(webToken)-4] + "AAAA" }, TokenBadSignature},
	}
	for _, tt := range refused {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			var te *TokenError
			if _, err := d.auth.AuthenticatePod(ctx, tt.token(t)); !errors.As(err, &te) || te.Reason != tt.want {
				t.Fatalf("AuthenticatePod: %v, want %s", err, tt.want)
			}
		})
	}

	t.Run("refused: the token of a deleted pod, and of a pod replaced by a namesake", func(t *testing.T) {
		if _, err := d.auth.AuthenticatePod(ctx, webToken); err != nil {
			t.Fatalf("before deletion: %v", err)
		}
		deletePod(t, ctx, web, 0)
		eventually(t, "the deletion reaches the cache", func() error {
			if _, ok, _ := d.watcher.pods.GetStore().GetByKey(ns + "/web"); ok {
				return errors.New("still cached")
			}
			return nil
		})
		var te *TokenError
		if _, err := d.auth.AuthenticatePod(ctx, webToken); !errors.As(err, &te) || te.Reason != TokenPodNotHere {
			t.Fatalf("deleted pod's token: %v, want pod_not_on_node", err)
		}
		again := runPod(t, ctx, podOf(ns, "web", node, "web", nil, false), corev1.PodRunning, "10.77.0.1")
		eventually(t, "the namesake is cached", func() error {
			if _, err := d.watcher.BoundPod(ctx, BoundPodRef{Namespace: ns, Name: "web", UID: again.UID}); err != nil {
				return err
			}
			return nil
		})
		if _, err := d.auth.AuthenticatePod(ctx, webToken); !errors.As(err, &te) || te.Reason != TokenPodNotHere {
			t.Fatalf("the old pod's token with a namesake running: %v, want pod_not_on_node", err)
		}
	})

	t.Run("a finished pod's token is refused", func(t *testing.T) {
		tok := podToken(t, ns, "irsa", irsa, DefaultPodIdentityAudience)
		setStatus(t, ctx, irsa, corev1.PodSucceeded)
		eventually(t, "the phase reaches the cache", func() error {
			if _, err := d.watcher.BoundPod(ctx, BoundPodRef{Namespace: ns, Name: "irsa", UID: irsa.UID}); err == nil {
				return errors.New("still live")
			}
			return nil
		})
		var te *TokenError
		if _, err := d.auth.AuthenticatePod(ctx, tok); !errors.As(err, &te) || te.Reason != TokenPodNotHere {
			t.Fatalf("finished pod's token: %v, want pod_not_on_node", err)
		}
	})

	t.Run("a pod whose ServiceAccount names the role is announced for prefetch", func(t *testing.T) {
		events := &roleEvents{}
		n, err := NewRoleNotifier(d.watcher, d.resolver, events, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		n.UseServiceAccountRoles(d.accounts)
		n.Resync()
		want := "changed " + ns + "/web " + testBase + "web-role"
		eventually(t, "the web pod is announced with its ServiceAccount's role", func() error {
			events.mu.Lock()
			defer events.mu.Unlock()
			if !slices.Contains(events.calls, want) {
				return fmt.Errorf("calls %q lack %q", events.calls, want)
			}
			return nil
		})
	})

	t.Run("the issuer is the API server's", func(t *testing.T) {
		keys, err := d.keys.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if keys.Issuer != "https://kubernetes.default.svc.cluster.local" || len(keys.Keys) == 0 {
			t.Fatalf("issuer %q with %d keys", keys.Issuer, len(keys.Keys))
		}
	})
}

// BenchmarkIntegrationTokenVerification measures the choice the token door
// made, on tokens the real kube-apiserver issued: a TokenReview (one API
// round trip per new token, what the alternative design would pay) against
// a local check with the published keys, full and cached.
func BenchmarkIntegrationTokenVerification(b *testing.B) {
	ctx := context.Background()
	const ns = "pi-bench"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, podOf(ns, "web", "pi-bench-node", "web", nil, false), metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	secs := int64(600)
	tok, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "web", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{DefaultPodIdentityAudience}, ExpirationSeconds: &secs,
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	raw := tok.Status.Token
	rest := admin.Discovery().RESTClient()
	keys := NewAPIServerKeys(func(ctx context.Context, path string) ([]byte, error) { return rest.Get().AbsPath(path).DoRaw(ctx) }, nil, testLogger())
	verifier, err := NewTokenVerifier(TokenVerifierOptions{Keys: keys})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("tokenreview", func(b *testing.B) {
		for b.Loop() {
			r, err := admin.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: raw, Audiences: []string{DefaultPodIdentityAudience}}}, metav1.CreateOptions{})
			if err != nil || !r.Status.Authenticated {
				b.Fatalf("TokenReview: %v %+v", err, r.Status)
			}
		}
	})
	b.Run("local-full", func(b *testing.B) {
		for b.Loop() {
			if _, err := verifier.verify(ctx, raw, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("local-cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := verifier.Verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestIntegrationTokenOfARecreatedServiceAccount: a token issued for a
// ServiceAccount that was then deleted and created again under the same
// name is refused (the API server's own authenticator refuses it too): the
// new account's role is not the old token's to take.
func TestIntegrationTokenOfARecreatedServiceAccount(t *testing.T) {
	ctx := context.Background()
	const ns, node = "pi-sa-again", "pi-node-sa"
	createNamespace(t, ns, ptr(`["web-role", "admin-role"]`))
	createNode(t, ctx, node)
	createServiceAccount(t, ns, "app", map[string]string{DefaultRoleKey: "web-role"})
	d := startTokenDoor(t, node, doorOptions{})
	pod := runPod(t, ctx, podOf(ns, "app", node, "app", nil, false), corev1.PodRunning, "10.78.0.1")
	tok := podToken(t, ns, "app", pod, DefaultPodIdentityAudience)
	eventually(t, "the pod's token is accepted", func() error {
		_, err := d.auth.AuthenticatePod(ctx, tok)
		return err
	})

	old, err := admin.CoreV1().ServiceAccounts(ns).Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.CoreV1().ServiceAccounts(ns).Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createServiceAccount(t, ns, "app", map[string]string{DefaultRoleKey: "admin-role"})
	eventually(t, "the agent sees the new ServiceAccount", func() error {
		if uid, ok := d.accounts.ServiceAccountUID(ns, "app"); !ok || uid == old.UID {
			return fmt.Errorf("cached UID %q (old %s)", uid, old.UID)
		}
		return nil
	})
	var te *TokenError
	if _, err := d.auth.AuthenticatePod(ctx, tok); !errors.As(err, &te) || te.Reason != TokenServiceAccountReplaced {
		t.Fatalf("the old ServiceAccount's token: %v, want %s", err, TokenServiceAccountReplaced)
	}
}
