// Package fakeimds is an EC2 instance metadata service for tests: the
// upstream that kube2ra's proxy talks to. It answers IMDSv1 and IMDSv2 like
// EC2 does (session tokens minted by PUT, bound to this instance and to a TTL,
// X-Forwarded-For refused on the token PUT, 401 for bad tokens, an optional
// "tokens required" mode), serves a node whose instance role (under
// security-credentials/ and security-credentials-extended/), user-data and
// signed identity documents carry SecretMarker, and records every request it
// receives so tests can prove that nothing forbidden was forwarded. Like a
// lenient web server it cleans paths and folds letter case, so a spelling
// the proxy let through would reach the secret it names.
//
// The listen address is configurable: unit tests use loopback, end-to-end
// tests bind 169.254.169.254:80 inside a network namespace.
package fakeimds

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/utils/clock"
)

// SecretMarker is part of everything the node has that a pod must never see:
// the instance role's credentials, identity-credentials, user-data, the
// signed identity documents and a private instance tag. A response from the
// proxy that contains it is a leak.
const SecretMarker = "FAKEIMDS-NODE-SECRET-3f9c2a"

const (
	// TokenHeader carries an IMDSv2 session token.
	TokenHeader = "X-aws-ec2-metadata-token"
	// TTLHeader carries the requested and granted token lifetime in seconds.
	TTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	// maxTokenTTLSeconds is EC2's upper bound for a token lifetime (6 hours).
	maxTokenTTLSeconds = 21600
	// timeLayout is how IMDS writes times in its JSON documents.
	timeLayout = "2006-01-02T15:04:05Z"
	// shutdownBound limits how long Stop waits for open requests.
	shutdownBound = 2 * time.Second
)

// Credentials are the instance role's temporary credentials.
type Credentials struct {
	// AccessKeyID is the access key served for the instance role.
	AccessKeyID string
	// SecretAccessKey is the secret served for the instance role.
	SecretAccessKey string
	// Token is the session token served for the instance role.
	Token string
	// Expiration is when the credentials expire.
	Expiration time.Time
}

// Options describe the fake instance. Zero values get defaults that include
// SecretMarker wherever the data is secret.
type Options struct {
	// Addr is the listen address; default 127.0.0.1:0.
	Addr string
	// RoleName is the instance profile's role; default "node-instance-role".
	RoleName string
	// AccountID is the instance's account; default 111122223333.
	AccountID string
	// Credentials are the instance role's credentials; defaults carry SecretMarker.
	Credentials Credentials
	// UserData is the instance user-data; the default carries SecretMarker.
	UserData string
	// Region is the instance's region; default eu-west-1.
	Region string
	// AvailabilityZone defaults to Region+"b".
	AvailabilityZone string
	// InstanceID defaults to i-0fa4e1c0ffee12345.
	InstanceID string
	// InstanceType defaults to m7g.large.
	InstanceType string
	// LocalIPv4 defaults to 10.0.1.23.
	LocalIPv4 string
	// MAC defaults to 0e:49:61:0f:c3:11.
	MAC string
	// RequireToken makes every GET without a valid token answer 401 (HttpTokens=required).
	RequireToken bool
	// HopLimit is EC2's HttpPutResponseHopLimit. With 1, the token PUT of a
	// caller that is not on this host (a pod, one routing hop away) gets no
	// answer: the connection is closed, as the response's packets would
	// expire on the way. 0 means no limit (the worst case: pods could get
	// tokens if nothing redirected them).
	HopLimit int
	// TokenPUTStatus, when non-zero, is the status every token PUT gets
	// (403/404/405 simulate an upstream without IMDSv2).
	TokenPUTStatus int
	// Clock decides token expiry; default the real clock.
	Clock clock.PassiveClock
}

// Request is one request the fake received, as it arrived.
type Request struct {
	// Method is the HTTP method.
	Method string
	// RequestURI is the raw request target.
	RequestURI string
	// Header is a copy of the request headers.
	Header http.Header
	// RemoteAddr is the caller's address.
	RemoteAddr string
}

// Server is a running (or stopped) fake metadata service.
type Server struct {
	// opts is the instance description with defaults applied.
	opts Options
	// clock decides token expiry.
	clock clock.PassiveClock
	// tree maps version-relative leaf paths to their content.
	tree map[string]string

	// mu guards everything below.
	mu sync.Mutex
	// addr is the bound address, kept across restarts.
	addr string
	// srv is the HTTP server while running.
	srv *http.Server
	// done is closed when the serving goroutine ends.
	done chan struct{}
	// tokens maps issued tokens to their expiry.
	tokens map[string]time.Time
	// tokensIssued counts tokens minted since New.
	tokensIssued int
	// requests records every request in arrival order.
	requests []Request
	// requireToken is the current HttpTokens=required setting.
	requireToken bool
	// tokenPUTStatus is the current forced status for token PUTs (0 = normal).
	tokenPUTStatus int
}

// New describes a fake instance; call Start to serve it.
func New(opts Options) *Server {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&opts.RoleName, "node-instance-role")
	def(&opts.AccountID, "111122223333")
	def(&opts.UserData, "#!/bin/sh\nexport DB_PASSWORD="+SecretMarker+"\n")
	def(&opts.Region, "eu-west-1")
	def(&opts.AvailabilityZone, opts.Region+"b")
	def(&opts.InstanceID, "i-0fa4e1c0ffee12345")
	def(&opts.InstanceType, "m7g.large")
	def(&opts.LocalIPv4, "10.0.1.23")
	def(&opts.MAC, "0e:49:61:0f:c3:11")
	def(&opts.Credentials.AccessKeyID, "ASIANODEROLE0000FAKE")
	def(&opts.Credentials.SecretAccessKey, "node-secret-"+SecretMarker)
	def(&opts.Credentials.Token, "node-token-"+SecretMarker)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Credentials.Expiration.IsZero() {
		opts.Credentials.Expiration = opts.Clock.Now().Add(6 * time.Hour).UTC().Truncate(time.Second)
	}
	s := &Server{
		opts:           opts,
		clock:          opts.Clock,
		addr:           opts.Addr,
		tokens:         map[string]time.Time{},
		requireToken:   opts.RequireToken,
		tokenPUTStatus: opts.TokenPUTStatus,
	}
	s.tree = s.buildTree()
	return s
}

// buildTree lays out the instance's metadata, version-relative.
func (s *Server) buildTree() map[string]string {
	o := s.opts
	now := s.clock.Now().UTC().Format(timeLayout)
	creds, _ := json.Marshal(map[string]string{
		"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC",
		"AccessKeyId": o.Credentials.AccessKeyID, "SecretAccessKey": o.Credentials.SecretAccessKey,
		"Token": o.Credentials.Token, "Expiration": o.Credentials.Expiration.UTC().Format(timeLayout),
	})
	extendedCreds, _ := json.Marshal(map[string]string{
		"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC",
		"AccessKeyId": o.Credentials.AccessKeyID, "SecretAccessKey": o.Credentials.SecretAccessKey,
		"Token": o.Credentials.Token, "Expiration": o.Credentials.Expiration.UTC().Format(timeLayout),
		"AccountId": o.AccountID,
	})
	identityCreds, _ := json.Marshal(map[string]string{
		"Code": "Success", "LastUpdated": now, "Type": "AWS-HMAC",
		"AccessKeyId": "ASIAIDENTITY0000FAKE", "SecretAccessKey": "identity-secret-" + SecretMarker,
		"Token": "identity-token-" + SecretMarker, "Expiration": o.Credentials.Expiration.UTC().Format(timeLayout),
	})
	info, _ := json.Marshal(map[string]string{
		"Code": "Success", "LastUpdated": now,
		"InstanceProfileArn": "arn:aws:iam::" + o.AccountID + ":instance-profile/" + o.RoleName,
		"InstanceProfileId":  "AIPANODEPROFILE0FAKE",
	})
	doc, _ := json.MarshalIndent(map[string]any{
		"accountId": o.AccountID, "architecture": "arm64", "availabilityZone": o.AvailabilityZone,
		"imageId": "ami-0fake0000000000001", "instanceId": o.InstanceID, "instanceType": o.InstanceType,
		"pendingTime": "2026-01-01T00:00:00Z", "privateIp": o.LocalIPv4, "region": o.Region,
		"version": "2017-09-30", "billingProducts": nil, "devpayProductCodes": nil, "marketplaceProductCodes": nil,
		"kernelId": nil, "ramdiskId": nil,
	}, "", "  ")
	hostname := "ip-" + strings.ReplaceAll(o.LocalIPv4, ".", "-") + "." + o.Region + ".compute.internal"
	mac := "network/interfaces/macs/" + o.MAC + "/"
	return map[string]string{
		"meta-data/ami-id":                                                     "ami-0fake0000000000001",
		"meta-data/ami-launch-index":                                           "0",
		"meta-data/hostname":                                                   hostname,
		"meta-data/instance-id":                                                o.InstanceID,
		"meta-data/instance-type":                                              o.InstanceType,
		"meta-data/instance-life-cycle":                                        "on-demand",
		"meta-data/local-hostname":                                             hostname,
		"meta-data/local-ipv4":                                                 o.LocalIPv4,
		"meta-data/mac":                                                        o.MAC,
		"meta-data/public-keys/0/openssh-key":                                  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKEFAKEFAKE fakeimds",
		"meta-data/placement/availability-zone":                                o.AvailabilityZone,
		"meta-data/placement/availability-zone-id":                             "euw1-az2",
		"meta-data/placement/region":                                           o.Region,
		"meta-data/" + mac + "device-number":                                   "0",
		"meta-data/" + mac + "local-ipv4s":                                     o.LocalIPv4,
		"meta-data/" + mac + "mac":                                             o.MAC,
		"meta-data/" + mac + "subnet-id":                                       "subnet-0fake00000000001",
		"meta-data/" + mac + "vpc-id":                                          "vpc-0fake00000000001",
		"meta-data/" + mac + "vpc-ipv4-cidr-block":                             "10.0.0.0/16",
		"meta-data/services/domain":                                            "amazonaws.com",
		"meta-data/services/partition":                                         "aws",
		"meta-data/events/maintenance/scheduled":                               "[]",
		"meta-data/tags/instance/Secret":                                       SecretMarker,
		"meta-data/iam/info":                                                   string(info),
		"meta-data/iam/security-credentials/" + o.RoleName:                     string(creds),
		"meta-data/iam/security-credentials-extended/" + o.RoleName:            string(extendedCreds),
		"meta-data/identity-credentials/ec2/info":                              `{"Code":"Success","AccountId":"` + o.AccountID + `"}`,
		"meta-data/identity-credentials/ec2/security-credentials/ec2-instance": string(identityCreds),
		"user-data":                           o.UserData,
		"dynamic/instance-identity/document":  string(doc),
		"dynamic/instance-identity/pkcs7":     "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABI" + SecretMarker,
		"dynamic/instance-identity/signature": "c2lnbmF0dXJl" + SecretMarker,
		"dynamic/instance-identity/rsa2048":   "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGg" + SecretMarker,
		"dynamic/fws/instance-monitoring":     "disabled",
	}
}

// Start binds the listen address (the same one again after Stop) and serves.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("fakeimds: Start called while already running; call Stop first")
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("fakeimds: listening on %s failed (is the address in use or not configured?): %w", s.addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	s.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln)
	}(s.srv, s.done)
	return nil
}

// Stop closes the listener and open connections; tokens stay valid.
func (s *Server) Stop() error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv, s.done = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-done
	return err
}

// Restart stops and starts again on the same address and forgets every
// token, as a rebooted metadata service would.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	s.mu.Lock()
	s.tokens = map[string]time.Time{}
	s.mu.Unlock()
	return s.Start()
}

// Addr is host:port of the listener (valid after the first Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// URL is http://host:port, usable as an IMDS endpoint.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Credentials are the instance role's credentials (what pods must never get).
func (s *Server) Credentials() Credentials { return s.opts.Credentials }

// Region is the instance's region.
func (s *Server) Region() string { return s.opts.Region }

// AvailabilityZone is the instance's availability zone.
func (s *Server) AvailabilityZone() string { return s.opts.AvailabilityZone }

// InstanceID is the instance's ID.
func (s *Server) InstanceID() string { return s.opts.InstanceID }

// Requests returns a copy of every request received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	copy(out, s.requests)
	return out
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// TokensIssued counts tokens minted since New.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

// SetRequireToken switches HttpTokens=required on or off.
func (s *Server) SetRequireToken(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requireToken = on
}

// SetTokenPUTStatus forces the status of token PUTs; 0 restores normal tokens.
func (s *Server) SetTokenPUTStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenPUTStatus = code
}

// ExpireTokens invalidates every issued token, as if their TTL had passed.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]time.Time{}
}

// Handler serves the fake metadata; it records every request first.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{
		Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr,
	})
	s.mu.Unlock()

	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Server", "EC2ws")
	// Worst case for the proxy: like a lenient web server, resolve "." and
	// ".." segments, collapse "//" and decode %-escapes (r.URL.Path is
	// decoded), so a non-canonical path that slipped through would reach
	// the secret it spells.
	p := path.Clean("/" + r.URL.Path)
	if p == "/" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			status(w, http.StatusMethodNotAllowed)
			return
		}
		_, _ = w.Write([]byte("1.0\n2007-01-19\n2021-07-15\nlatest"))
		return
	}
	version, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !validVersion(version) {
		status(w, http.StatusNotFound)
		return
	}
	if rest == "api/token" {
		s.serveToken(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		status(w, http.StatusMethodNotAllowed)
		return
	}
	if !s.tokenOK(r) {
		status(w, http.StatusUnauthorized)
		return
	}
	body, ok := s.lookup(strings.TrimSuffix(rest, "/"))
	if !ok {
		status(w, http.StatusNotFound)
		return
	}
	_, _ = w.Write([]byte(body))
}

// serveToken mints a session token the way EC2 does.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		status(w, http.StatusMethodNotAllowed)
		return
	}
	if s.opts.HopLimit == 1 && !onThisHost(r.RemoteAddr) {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if _, forwarded := r.Header[http.CanonicalHeaderKey("X-Forwarded-For")]; forwarded {
		status(w, http.StatusForbidden)
		return
	}
	s.mu.Lock()
	forced := s.tokenPUTStatus
	s.mu.Unlock()
	if forced != 0 {
		status(w, forced)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(TTLHeader))
	if err != nil || ttl < 1 || ttl > maxTokenTTLSeconds {
		status(w, http.StatusBadRequest)
		return
	}
	if s.opts.HopLimit > 0 {
		// EC2 sends the response with the hop limit as its IP TTL.
		setResponseTTL(r.Context(), s.opts.HopLimit)
	}
	raw := make([]byte, 40)
	_, _ = rand.Read(raw)
	tok := base64.RawURLEncoding.EncodeToString(raw)
	s.mu.Lock()
	s.tokens[tok] = s.clock.Now().Add(time.Duration(ttl) * time.Second)
	s.tokensIssued++
	s.mu.Unlock()
	w.Header().Set(TTLHeader, strconv.Itoa(ttl))
	_, _ = w.Write([]byte(tok))
}

// tokenOK applies HttpTokens: a token that is present must be valid; an
// absent one is fine unless tokens are required.
func (s *Server) tokenOK(r *http.Request) bool {
	vals := r.Header.Values(TokenHeader)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(vals) == 0 {
		return !s.requireToken
	}
	if len(vals) > 1 {
		return false
	}
	exp, ok := s.tokens[vals[0]]
	return ok && s.clock.Now().Before(exp)
}

// lookup returns a leaf's value or a directory listing for rel.
func (s *Server) lookup(rel string) (string, bool) {
	if rel == "" {
		return "dynamic\nmeta-data\nuser-data", true
	}
	if v, ok := s.tree[rel]; ok {
		return v, true
	}
	// Worst case for the proxy again: a server that folds letter case
	// answers meta-data/IAM/... with the node's secrets.
	for k, v := range s.tree {
		if strings.EqualFold(k, rel) {
			return v, true
		}
	}
	children := map[string]bool{}
	prefix := rel + "/"
	for k := range s.tree {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			name, _, more := strings.Cut(rest, "/")
			if more {
				name += "/"
			}
			children[name] = true
		}
	}
	if len(children) == 0 {
		return "", false
	}
	names := make([]string, 0, len(children))
	for n := range children {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, "\n"), true
}

func validVersion(v string) bool {
	if v == "latest" || v == "1.0" {
		return true
	}
	_, err := time.Parse("2006-01-02", v)
	return err == nil && len(v) == len("2006-01-02")
}

func status(w http.ResponseWriter, code int) {
	w.WriteHeader(code)
	_, _ = w.Write([]byte(http.StatusText(code) + "\n"))
}

// onThisHost reports whether remoteAddr is one of this network namespace's
// own addresses, i.e. zero routing hops away.
func onThisHost(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// connKey finds the request's connection in its context.
type connKey struct{}

// setResponseTTL sets the IP TTL (hop limit) of what the server sends on the
// request's connection from now on.
func setResponseTTL(ctx context.Context, ttl int) {
	c, ok := ctx.Value(connKey{}).(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		if a, ok := c.LocalAddr().(*net.TCPAddr); ok && a.IP.To4() == nil {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_UNICAST_HOPS, ttl)
			return
		}
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl)
	})
}
