package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
	"github.com/kube2ra/kube2ra/test/syncbuf"
	"github.com/kube2ra/kube2ra/test/tokensigner"
)

const (
	doorIssuer = "https://kubernetes.default.svc"
	doorNode   = "node-1"
)

// staticKeys is a KeySource with fixed keys, or failing with err.
type staticKeys struct {
	keys *k8s.SigningKeys
	err  error
}

func (s staticKeys) Keys(context.Context) (*k8s.SigningKeys, error)    { return s.keys, s.err }
func (s staticKeys) Refresh(context.Context) (*k8s.SigningKeys, error) { return s.keys, s.err }
func (s staticKeys) Fresh() (*k8s.SigningKeys, bool)                   { return s.keys, s.err == nil }

// boundPods is a BoundPodFinder over pods by UID, or failing with err.
type boundPods struct {
	mu   sync.Mutex
	pods map[string]*k8s.Pod
	err  error
}

func (b *boundPods) BoundPod(_ context.Context, ref k8s.BoundPodRef) (*k8s.Pod, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return nil, b.err
	}
	if p, ok := b.pods[string(ref.UID)]; ok && p.Namespace == ref.Namespace && p.Name == ref.Name {
		return p, nil
	}
	return nil, fmt.Errorf("%w: %s", k8s.ErrPodNotFound, ref)
}

// podRoles gives each pod, by name, its role or error.
type podRoles struct {
	mu    sync.Mutex
	roles map[string]k8s.Role
	err   error
}

func (p *podRoles) ResolveRole(_ context.Context, pod *k8s.Pod) (k8s.Role, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return k8s.Role{}, p.err
	}
	if r, ok := p.roles[pod.Name]; ok {
		return r, nil
	}
	return k8s.Role{}, k8s.ErrNoRole
}

// roleCreds hands out credentials that name the role they are for, so a
// test can tell which role a client got; or fails with err.
type roleCreds struct {
	mu  sync.Mutex
	err error
}

// credsExpiry is when every roleCreds credential expires: a fixed time,
// so two reads agree.
var credsExpiry = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *roleCreds) GetCredentials(_ context.Context, _ *k8s.Pod, role k8s.Role) (credentials.Credentials, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return credentials.Credentials{}, r.err
	}
	return credsFor(role.Name), nil
}

func credsFor(roleName string) credentials.Credentials {
	return credentials.Credentials{
		AccessKeyID:     "ASIA" + strings.ToUpper(strings.ReplaceAll(roleName, "-", "")),
		SecretAccessKey: "secret-of-" + roleName,
		SessionToken:    "session-of-" + roleName,
		Expiration:      credsExpiry,
	}
}

// nodeAddrs is a NodeAddresses over a fixed set (loopback is not in it
// unless added: the tests call from loopback and decide).
type nodeAddrs struct {
	mu    sync.Mutex
	addrs map[netip.Addr]bool
}

func (n *nodeAddrs) Contains(ip netip.Addr) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs[ip]
}

func (n *nodeAddrs) add(ip netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs[ip] = true
}

// accountUIDs is a ServiceAccountUIDGetter: every ServiceAccount has the
// UID tokensigner puts in tokens, unless uids says otherwise ("" is not
// cached).
type accountUIDs struct {
	mu   sync.Mutex
	uids map[string]types.UID
}

func (a *accountUIDs) ServiceAccountUID(namespace, name string) (types.UID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	uid, ok := a.uids[namespace+"/"+name]
	if !ok {
		return "sa-uid", true
	}
	return uid, uid != ""
}

func (a *accountUIDs) set(key string, uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.uids[key] = uid
}

// doorPod is one pod of the door tests with its role and token.
type doorPod struct {
	pod   *k8s.Pod
	role  k8s.Role
	token string
}

// doorEnv is a proxy with the token door open: real token verification
// against generated keys, fake pods, roles and credentials.
type doorEnv struct {
	url, addr  string
	key        tokensigner.Key
	web, batch doorPod
	pods       *boundPods
	owners     *fakePods
	accounts   *accountUIDs
	node       *nodeAddrs
	roles      *podRoles
	creds      *roleCreds
	reg        *prometheus.Registry
	logs       *syncbuf.Buffer
}

func (e *doorEnv) claims(p *k8s.Pod) tokensigner.Claims {
	now := time.Now()
	return tokensigner.Claims{Issuer: doorIssuer, Audience: []string{k8s.DefaultPodIdentityAudience},
		Namespace: p.Namespace, ServiceAccount: p.ServiceAccount, PodName: p.Name, PodUID: string(p.UID), Node: doorNode,
		IssuedAt: now.Add(-time.Minute), Expiry: now.Add(time.Hour)}
}

func (e *doorEnv) sign(t testing.TB, c tokensigner.Claims) string {
	t.Helper()
	tok, err := e.key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newDoorEnv(t testing.TB, opts Options, keysErr error) *doorEnv {
	t.Helper()
	key, err := tokensigner.NewRSA("key-1")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := tokensigner.JWKS(key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := k8s.ParseJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	e := &doorEnv{key: key, creds: &roleCreds{}, reg: prometheus.NewRegistry(), logs: &syncbuf.Buffer{},
		owners: &fakePods{}, node: &nodeAddrs{addrs: map[netip.Addr]bool{}}, accounts: &accountUIDs{uids: map[string]types.UID{}}}
	mk := func(name, sa, role string) doorPod {
		p := &k8s.Pod{UID: types.UID("uid-" + name), Namespace: "team-a", Name: name, ServiceAccount: sa, NodeName: doorNode}
		return doorPod{pod: p, role: k8s.Role{ARN: "arn:aws:iam::123456789012:role/" + role, Name: role, AccountID: "123456789012"}}
	}
	e.web, e.batch = mk("web", "web-sa", "web-role"), mk("batch", "batch-sa", "batch-role")
	e.web.token, e.batch.token = e.sign(t, e.claims(e.web.pod)), e.sign(t, e.claims(e.batch.pod))
	e.pods = &boundPods{pods: map[string]*k8s.Pod{"uid-web": e.web.pod, "uid-batch": e.batch.pod}}
	e.become(e.web)
	e.roles = &podRoles{roles: map[string]k8s.Role{"web": e.web.role, "batch": e.batch.role}}
	verifier, err := k8s.NewTokenVerifier(k8s.TokenVerifierOptions{Keys: staticKeys{keys: &k8s.SigningKeys{Issuer: doorIssuer, Keys: parsed}, err: keysErr}})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := k8s.NewPodAuthenticator(verifier, e.pods, e.accounts, doorNode)
	if err != nil {
		t.Fatal(err)
	}
	opts.PodIdentity = &PodIdentity{Pods: auth, Roles: e.roles, NodeAddrs: e.node}
	if opts.MetadataAddr == "" {
		opts.MetadataAddr, opts.Region = MetadataAddrNone, "eu-west-1"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener, opts.Registerer = ln, e.reg
	l := logrus.New()
	l.SetOutput(e.logs)
	l.SetFormatter(&logrus.JSONFormatter{})
	opts.Logger = l
	// The IMDS door knows who owns loopback but gives no pod a role:
	// whatever the token door serves comes from the token.
	srv, err := New(opts, e.owners, &fakeRoles{err: k8s.ErrNoRole}, e.creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	e.addr = srv.Addr().String()
	e.url = "http://" + e.addr + PodIdentityPath
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// become makes p the pod the tests call from: the one live owner of
// 127.0.0.1 under the metadata door's rule; the other pod has another
// address. The pods are replaced, not changed, as the agent's cache does.
func (e *doorEnv) become(p doorPod) {
	e.pods.mu.Lock()
	defer e.pods.mu.Unlock()
	e.owners.mu.Lock()
	defer e.owners.mu.Unlock()
	for i, dp := range []*doorPod{&e.web, &e.batch} {
		pod := *dp.pod
		pod.IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})}
		if pod.UID == p.pod.UID {
			pod.IPs = []netip.Addr{loopback}
			e.owners.byIP = map[netip.Addr]*k8s.Pod{loopback: &pod}
		}
		if _, ok := e.pods.pods[string(pod.UID)]; ok {
			e.pods.pods[string(pod.UID)] = &pod
		}
		dp.pod = &pod
	}
}

// getDoor sends GET (or method) to the door with the given Authorization values.
func getDoor(t testing.TB, method, url string, auth ...string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestPodIdentityServesTheTokensPod(t *testing.T) {
	e := newDoorEnv(t, Options{IMDSv2Required: true}, nil)
	for _, p := range []doorPod{e.web, e.batch} {
		e.become(p)
		for _, auth := range []string{p.token, "Bearer " + p.token} {
			status, h, body := getDoor(t, http.MethodGet, e.url, auth)
			if status != http.StatusOK {
				t.Fatalf("%s: status %d: %s", p.pod.Name, status, body)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var doc map[string]string
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			want := credsFor(p.role.Name)
			if doc["AccessKeyId"] != want.AccessKeyID || doc["SecretAccessKey"] != want.SecretAccessKey || doc["Token"] != want.SessionToken || doc["AccountId"] != "123456789012" {
				t.Errorf("%s got %v, want the credentials of %s", p.pod.Name, doc, p.role.Name)
			}
			if exp, err := time.Parse(time.RFC3339, doc["Expiration"]); err != nil || !exp.Equal(want.Expiration) {
				t.Errorf("Expiration %q, want %v", doc["Expiration"], want.Expiration)
			}
		}
	}
	if n := counterValue(t, e.reg, "kube2ra_pod_identity_requests_total", map[string]string{"result": "success"}); n != 4 {
		t.Errorf("success counter %v, want 4", n)
	}
	if strings.Contains(e.logs.String(), e.web.token) || strings.Contains(e.logs.String(), strings.Split(e.web.token, ".")[2]) {
		t.Error("the log contains a token")
	}
}

func TestPodIdentityRefusals(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		method string
		auth   func(e *doorEnv, t *testing.T) []string
		setup  func(e *doorEnv)
		keys   error
		status int
		code   string
		result string
	}{
		{name: "no Authorization header is a bad request", auth: func(*doorEnv, *testing.T) []string { return nil },
			status: 400, code: piCodeBadRequest, result: "malformed_token"},
		{name: "two Authorization headers are a bad request", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token, e.batch.token} },
			status: 400, code: piCodeBadRequest, result: "malformed_token"},
		{name: "a token that is not a JWT is a bad request", auth: func(*doorEnv, *testing.T) []string { return []string{"not-a-token"} },
			status: 400, code: piCodeBadRequest, result: "malformed_token"},
		{name: "a token signed by another key is unauthorized", auth: func(e *doorEnv, t *testing.T) []string {
			other, err := tokensigner.NewRSA("key-1")
			if err != nil {
				t.Fatal(err)
			}
			tok, err := other.Sign(e.claims(e.web.pod))
			if err != nil {
				t.Fatal(err)
			}
			return []string{tok}
		}, status: 401, code: piCodeUnauthorized, result: "bad_signature"},
		{name: "an expired token is unauthorized", auth: func(e *doorEnv, t *testing.T) []string {
			c := e.claims(e.web.pod)
			c.IssuedAt, c.Expiry = now.Add(-3*time.Hour), now.Add(-2*time.Hour)
			return []string{e.sign(t, c)}
		}, status: 401, code: piCodeUnauthorized, result: "expired"},
		{name: "a token for another audience is unauthorized", auth: func(e *doorEnv, t *testing.T) []string {
			c := e.claims(e.web.pod)
			c.Audience = []string{"sts.amazonaws.com"}
			return []string{e.sign(t, c)}
		}, status: 401, code: piCodeUnauthorized, result: "wrong_audience"},
		{name: "a token of a pod on another node is forbidden", auth: func(e *doorEnv, t *testing.T) []string {
			c := e.claims(e.web.pod)
			c.Node = "node-2"
			return []string{e.sign(t, c)}
		}, status: 403, code: piCodeForbidden, result: "pod_not_on_node"},
		{name: "a token of a deleted pod is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { delete(e.pods.pods, "uid-web") }, status: 403, code: piCodeForbidden, result: "pod_not_on_node"},
		{name: "a token naming a pod's name with another UID is forbidden", auth: func(e *doorEnv, t *testing.T) []string {
			c := e.claims(e.web.pod)
			c.PodUID = "uid-of-an-earlier-web"
			return []string{e.sign(t, c)}
		}, status: 403, code: piCodeForbidden, result: "pod_not_on_node"},
		{name: "a token naming another ServiceAccount than the pod's is forbidden", auth: func(e *doorEnv, t *testing.T) []string {
			c := e.claims(e.web.pod)
			c.ServiceAccount = "batch-sa"
			return []string{e.sign(t, c)}
		}, status: 403, code: piCodeForbidden, result: "pod_not_on_node"},
		{name: "a token of a ServiceAccount deleted and created again is unauthorized", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.accounts.set("team-a/web-sa", "uid-of-the-new-web-sa") }, status: 401, code: piCodeUnauthorized, result: "service_account_replaced"},
		{name: "a ServiceAccount not in the cache is retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.accounts.set("team-a/web-sa", "") }, status: 503, code: piCodeUnavailable, result: "not_synced"},
		{name: "a pod without a role is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { delete(e.roles.roles, "web") }, status: 403, code: piCodeForbidden, result: "no_role"},
		{name: "a role the namespace does not allow is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.roles.err = &k8s.DenialError{Reason: k8s.DeniedByNamespace, Role: "x", Namespace: "team-a", Detail: "not allowed"}
			}, status: 403, code: piCodeForbidden, result: "role_denied"},
		{name: "an unsynced pod cache is retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.pods.err = k8s.ErrNotSynced }, status: 503, code: piCodeUnavailable, result: "not_synced"},
		{name: "unreadable signing keys are retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			keys: errors.New("forbidden"), status: 503, code: piCodeUnavailable, result: "keys_unavailable"},
		{name: "throttled credentials are retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.creds.err = &credentials.Error{Kind: credentials.KindThrottled, RoleARN: "r", Message: "rate exceeded for account 123", Err: errors.New("Throttling")}
			}, status: 503, code: piCodeUnavailable, result: "credentials_error"},
		{name: "denied credentials are a server error", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.creds.err = &credentials.Error{Kind: credentials.KindDenied, RoleARN: "r", Message: "secret policy text", Err: errors.New("AccessDenied")}
			}, status: 500, code: piCodeInternal, result: "credentials_error"},
		{name: "a token sent from another pod's address is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.web.pod.IPs = []netip.Addr{netip.MustParseAddr("10.0.0.7")} }, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "a host-network pod's token counts from the node's own addresses", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.web.pod.IPs, e.web.pod.HostNetwork = nil, true
				e.node.add(loopback)
				delete(e.roles.roles, "web") // stop after authentication: no_role proves it passed
			}, status: 403, code: piCodeForbidden, result: "no_role"},
		{name: "a host-network pod's token from an address that is not the node's is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.web.pod.IPs, e.web.pod.HostNetwork = nil, true }, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "a terminating pod's token from its address, now another pod's, is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.become(e.batch) // batch got web's recycled IP; the cache still lists it for web too
				e.web.pod.IPs, e.web.pod.Terminating = []netip.Addr{loopback}, true
			}, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "a terminating pod's token from an address no live pod owns is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.web.pod.Terminating = true
				e.owners.byIP = nil // the metadata door's rule: a terminating pod owns nothing
			}, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "a token from an address two live pods claim is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.owners.set(k8s.ErrAmbiguousIP) }, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "an address whose owner cannot be confirmed now is retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.owners.set(k8s.ErrNotSynced) }, status: 503, code: piCodeUnavailable, result: "not_synced"},
		{name: "a pod whose IP no source knows yet is retried", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.web.pod.IPs, e.owners.byIP = nil, nil }, status: 503, code: piCodeUnavailable, result: "pod_ip_unknown"},
		{name: "a pod whose IP the API lacks but the owner lookup gives it (its sandbox's record) is served", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.web.pod.IPs = nil
				delete(e.roles.roles, "web") // stop after the source check: no_role proves it passed
			}, status: 403, code: piCodeForbidden, result: "no_role"},
		{name: "a pod whose IP the API lacks, sending from another pod's address, is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) {
				e.become(e.batch) // batch owns the address the request comes from
				e.web.pod.IPs = nil
			}, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "a pod whose IP the API lacks, from an address two live pods claim, is forbidden", auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			setup: func(e *doorEnv) { e.web.pod.IPs = nil; e.owners.set(k8s.ErrAmbiguousIP) }, status: 403, code: piCodeForbidden, result: "source_mismatch"},
		{name: "POST is not allowed", method: http.MethodPost, auth: func(e *doorEnv, _ *testing.T) []string { return []string{e.web.token} },
			status: 405, code: piCodeBadRequest, result: "bad_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newDoorEnv(t, Options{}, tt.keys)
			if tt.setup != nil {
				tt.setup(e)
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			auth := tt.auth(e, t)
			status, h, body := getDoor(t, method, e.url, auth...)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			// Exact keys: Go and Java read code/message, JavaScript Code/Message.
			var doc map[string]string
			if h.Get("Content-Type") != "application/json" || json.Unmarshal(body, &doc) != nil || doc["code"] != tt.code || doc["Code"] != tt.code ||
				doc["message"] == "" || doc["Message"] != doc["message"] {
				t.Fatalf("body %q (%s), want JSON with code and Code %s, and the same message as message and Message", body, h.Get("Content-Type"), tt.code)
			}
			if strings.Contains(string(body), "secret policy") || strings.Contains(string(body), "rate exceeded") {
				t.Errorf("the body carries AWS's message: %s", body)
			}
			if n := counterValue(t, e.reg, "kube2ra_pod_identity_requests_total", map[string]string{"result": tt.result}); n != 1 {
				t.Errorf("result %s counted %v times, want 1", tt.result, n)
			}
			for _, a := range auth {
				if len(a) > 20 && strings.Contains(e.logs.String(), a) {
					t.Error("the log contains the token")
				}
			}
		})
	}
}

func TestPodIdentityDoorClosedByDefault(t *testing.T) {
	e := newTestEnv(t, Options{MetadataAddr: MetadataAddrNone, Region: "eu-west-1"})
	status, _, _ := getDoor(t, http.MethodGet, e.url+PodIdentityPath, "some-token")
	if status != http.StatusNotFound && status != http.StatusBadRequest {
		t.Fatalf("closed door answered %d", status)
	}
	if status == http.StatusOK {
		t.Fatal("closed door served credentials")
	}
}

// writeToken writes a token file as the kubelet projects it (no newline:
// botocore refuses a header value with one).
func writeToken(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// containerEnv is an isolated environment whose only credential source is
// the token door: IMDS disabled, the two variables the admission policy
// injects, nothing else.
func containerEnv(t *testing.T, url, tokenFile string, extra ...string) []string {
	env := isolatedEnv(t, "http://127.0.0.1:1", true, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI="+url, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="+tokenFile)
	return append(env, extra...)
}

func TestPodIdentityGoSDKDefaultChain(t *testing.T) {
	e := newDoorEnv(t, Options{}, nil)
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", e.url)
	for _, p := range []doorPod{e.web, e.batch} {
		e.become(p)
		t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", writeToken(t, p.token))
		cfg, err := config.LoadDefaultConfig(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got, err := cfg.Credentials.Retrieve(context.Background())
		if err != nil {
			t.Fatalf("%s: Retrieve: %v", p.pod.Name, err)
		}
		want := credsFor(p.role.Name)
		if got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey || got.SessionToken != want.SessionToken ||
			// The SDK's credential cache moves the expiry up to 5 minutes early.
			got.Expires.After(want.Expiration) || got.Expires.Before(want.Expiration.Add(-5*time.Minute)) {
			t.Errorf("%s got %s (expires %v), want %s", p.pod.Name, got.AccessKeyID, got.Expires, want.AccessKeyID)
		}
		if got.AccountID != "123456789012" {
			t.Errorf("AccountID %q", got.AccountID)
		}
	}

	// A refused token is a clear, non-retried error naming the reason.
	e.become(e.web)
	c := e.claims(e.web.pod)
	c.Audience = []string{"sts.amazonaws.com"}
	t.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", writeToken(t, e.sign(t, c)))
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Credentials.Retrieve(context.Background()); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("wrong audience: %v, want an error naming the audience", err)
	}
	if n := counterValue(t, e.reg, "kube2ra_pod_identity_requests_total", map[string]string{"result": "wrong_audience"}); n != 1 {
		t.Errorf("the SDK sent the refused token %v times, want 1 (400/401/403 are not retried)", n)
	}
}

const boto3DoorScript = `
import json, boto3
c = boto3.Session().get_credentials()
f = c.get_frozen_credentials()
print(json.dumps({"method": c.method, "access_key": f.access_key, "secret_key": f.secret_key, "token": f.token}))
`

func TestPodIdentityBoto3(t *testing.T) {
	py := needPython(t)
	e := newDoorEnv(t, Options{}, nil)
	for _, p := range []doorPod{e.web, e.batch} {
		e.become(p)
		stdout, stderr, err := run(t, containerEnv(t, e.url, writeToken(t, p.token)), py, "-c", boto3DoorScript)
		if err != nil {
			t.Fatalf("%s: boto3: %v\n%s", p.pod.Name, err, stderr)
		}
		var got struct{ Method, AccessKey, SecretKey, Token string }
		if err := json.Unmarshal([]byte(strings.ReplaceAll(stdout, "_k", "K")), &got); err != nil {
			t.Fatalf("output %q: %v", stdout, err)
		}
		want := credsFor(p.role.Name)
		if got.Method != "container-role" || got.AccessKey != want.AccessKeyID || got.SecretKey != want.SecretAccessKey || got.Token != want.SessionToken {
			t.Errorf("%s: boto3 got %+v, want %s via container-role", p.pod.Name, got.AccessKey, want.AccessKeyID)
		}
	}
}

// TestPodIdentityAWSCLIv2 runs Debian's AWS CLI v2 (2.9.19). It predates
// EKS Pod Identity: it reads the token only from
// AWS_CONTAINER_AUTHORIZATION_TOKEN (not _FILE) and allows only
// 169.254.170.2, localhost and 127.0.0.1 over http. So with only the
// injected variables it gets nothing (and must not get anything else);
// given the token's value on loopback it speaks the protocol and gets
// exactly its pod's role.
func TestPodIdentityAWSCLIv2(t *testing.T) {
	needCLIv2(t)
	e := newDoorEnv(t, Options{}, nil)
	if _, stderr, err := run(t, containerEnv(t, e.url, writeToken(t, e.web.token)), awsCLIv2, "configure", "export-credentials", "--format", "process"); err == nil {
		t.Fatal("AWS CLI 2.9 exported credentials from the token file it does not read")
	} else if !strings.Contains(stderr, "400") {
		t.Errorf("stderr %q, want the door's 400 for a request without a token", stderr)
	}
	for _, p := range []doorPod{e.web, e.batch} {
		e.become(p)
		env := containerEnv(t, e.url, "/nonexistent", "AWS_CONTAINER_AUTHORIZATION_TOKEN="+p.token)
		stdout, stderr, err := run(t, env, awsCLIv2, "configure", "export-credentials", "--format", "process")
		if err != nil {
			t.Fatalf("%s: aws configure export-credentials: %v\n%s", p.pod.Name, err, stderr)
		}
		var got struct {
			AccessKeyID     string `json:"AccessKeyId"`
			SecretAccessKey string
			SessionToken    string
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("output: %v", err)
		}
		want := credsFor(p.role.Name)
		if got.AccessKeyID != want.AccessKeyID || got.SecretAccessKey != want.SecretAccessKey || got.SessionToken != want.SessionToken {
			t.Errorf("%s: AWS CLI v2 got %s, want %s", p.pod.Name, got.AccessKeyID, want.AccessKeyID)
		}
	}
}
