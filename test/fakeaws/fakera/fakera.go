// Package fakera is a fake IAM Roles Anywhere endpoint for tests: a real
// HTTP server that answers CreateSession (POST /sessions) only after
// verifying the request as AWS does — the SigV4-X509 signature with the
// public key of X-Amz-X509, the chain through X-Amz-X509-Chain to a trust
// anchor's CA, certificate validity and usage, serial and scope, the date
// window, the profile's role list, session-name acceptance and duration — and
// answers with the service's response and error shapes. Knobs make it slow,
// failing, throttling or unreachable; it remembers what it accepted and
// which credentials it issued to whom.
//
// The verifier here is written independently of package rolesanywhere's
// signer on purpose: a shared bug would otherwise pass unnoticed.
package fakera

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/test/fakeaws/endpoint"
	"github.com/kube2ra/kube2ra/test/fakeaws/faults"
)

// TrustAnchor is a Roles Anywhere trust anchor: an ARN and the CA
// certificates it trusts.
type TrustAnchor struct {
	// ARN is arn:PARTITION:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID.
	ARN string
	// CAs are the trusted roots (the anchor's certificate bundle).
	CAs []*x509.Certificate
}

// Profile is a Roles Anywhere profile.
type Profile struct {
	// ARN is arn:PARTITION:rolesanywhere:REGION:ACCOUNT:profile/ID.
	ARN string
	// RoleARNs are the roles the profile may hand out.
	RoleARNs []string
	// AcceptRoleSessionName lets requests set roleSessionName.
	AcceptRoleSessionName bool
	// DurationSeconds is the profile's session duration: the default when a
	// request gives none, and the most a request may ask for. 3600 when 0.
	DurationSeconds int
}

// Options configure a Server.
type Options struct {
	// TrustAnchors are the anchors that exist.
	TrustAnchors []TrustAnchor
	// Profiles are the profiles that exist.
	Profiles []Profile
	// Clock is "now" for the date window, certificate validity and issued
	// expirations; the real clock when nil.
	Clock clock.PassiveClock
	// DisableTimeWindow skips the ±5 minute X-Amz-Date check, for replaying
	// recorded requests (certificate validity is still checked at Clock).
	DisableTimeWindow bool
	// Logger receives one line per request (never a secret); discarded when nil.
	Logger logrus.FieldLogger
	// OnIssue, when set, is called with every issued session (e.g. to teach
	// a fake STS the new credentials).
	OnIssue func(Issued)
}

// Issued is what the fake remembers about credentials it issued. It holds
// the secrets, so tests can check exactly what a client received.
type Issued struct {
	// AccessKeyID is the issued ASIA... key.
	AccessKeyID string
	// SecretAccessKey is the issued secret.
	SecretAccessKey string
	// SessionToken is the issued token.
	SessionToken string
	// RoleARN is the role assumed.
	RoleARN string
	// SessionName is the role session name (the certificate serial in hex
	// when the request gave none, as AWS does).
	SessionName string
	// AssumedRoleARN is arn:PARTITION:sts::ACCOUNT:assumed-role/NAME/SESSION.
	AssumedRoleARN string
	// AssumedRoleID is AROA...:SESSION.
	AssumedRoleID string
	// Account is the role's account.
	Account string
	// Serial is the decimal serial of the certificate that asked.
	Serial string
	// Subject is that certificate's subject.
	Subject string
	// TrustAnchorARN and ProfileARN are those of the request.
	TrustAnchorARN, ProfileARN string
	// Expiration is when the credentials expire.
	Expiration time.Time
}

// Identity is what sts:GetCallerIdentity would answer for issued credentials.
type Identity struct {
	// Account is the 12-digit account.
	Account string
	// Arn is the assumed-role session ARN.
	Arn string
	// UserID is AROA...:SESSION.
	UserID string
}

// Accepted is one CreateSession the fake granted.
type Accepted struct {
	// Time is the fake's clock at the request.
	Time time.Time
	// Serial is the leaf serial in decimal.
	Serial string
	// Subject is the leaf subject.
	Subject string
	// RoleARN is the role asked for.
	RoleARN string
	// RoleSessionName is the requested session name, empty when none.
	RoleSessionName string
	// DurationSeconds is the duration asked for (0 when none).
	DurationSeconds int
	// AccessKeyID is what was issued.
	AccessKeyID string
}

// Stats counts requests by outcome.
type Stats struct {
	// Requests is every request received.
	Requests int
	// Accepted were answered 201.
	Accepted int
	// Denied were answered 403 AccessDeniedException.
	Denied int
	// Invalid were answered 400 ValidationException or 404.
	Invalid int
	// Throttled were answered 429 by the throttle knobs.
	Throttled int
	// Failed were answered 500 by the failure knobs.
	Failed int
	// Dropped were closed without answer by the outage knob.
	Dropped int
}

// Server is the fake endpoint. Its methods are safe for concurrent use.
type Server struct {
	// clock is "now".
	clock clock.PassiveClock
	// window is false when the date window is off.
	window bool
	// logger receives one line per request.
	logger logrus.FieldLogger
	// onIssue is called for each issued session.
	onIssue func(Issued)
	// Knobs make the fake slow, unreachable, or answer 500
	// InternalServerException or 429 ThrottlingException.
	faults.Knobs
	// injector applies the knobs to each request and counts their faults.
	injector *faults.Injector
	// Endpoint serves Handler (Start, StartTLS, Serve) and gives its URL,
	// Client and Close.
	*endpoint.Endpoint

	// mu guards everything below.
	mu sync.Mutex
	// anchors maps trust anchor ARN to anchor.
	anchors map[string]*anchor
	// profiles maps profile ARN to profile.
	profiles map[string]Profile
	// issued maps access key ID to session.
	issued map[string]Issued
	// accepted lists granted requests in order.
	accepted []Accepted
	// stats counts outcomes.
	stats Stats
}

// anchor is a parsed trust anchor.
type anchor struct {
	// arn is the parsed ARN.
	arn arnParts
	// pool holds the CAs.
	pool *x509.CertPool
}

// New builds a Server without listening; use Start, StartTLS, Serve or Handler.
func New(opts Options) (*Server, error) {
	s := &Server{
		clock:    opts.Clock,
		window:   !opts.DisableTimeWindow,
		logger:   opts.Logger,
		onIssue:  opts.OnIssue,
		anchors:  map[string]*anchor{},
		profiles: map[string]Profile{},
		issued:   map[string]Issued{},
		injector: faults.New(faults.Options{
			FailAnswer: func(w http.ResponseWriter) {
				writeError(w, &apiError{http.StatusInternalServerError, "InternalServerException", "An internal error occurred."})
			},
			ThrottleAnswer: func(w http.ResponseWriter) {
				writeError(w, &apiError{http.StatusTooManyRequests, "ThrottlingException", "Rate exceeded"})
			},
		}),
	}
	s.Knobs = s.injector
	s.Endpoint = endpoint.New(s.Handler())
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	if s.logger == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		s.logger = l
	}
	for _, ta := range opts.TrustAnchors {
		if err := s.AddTrustAnchor(ta); err != nil {
			return nil, err
		}
	}
	for _, p := range opts.Profiles {
		if err := s.AddProfile(p); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Start builds a Server and serves it over plain HTTP on a loopback port.
func Start(opts Options) (*Server, error) { return start(opts, endpoint.Start) }

// StartTLS builds a Server and serves it over HTTPS on a loopback port;
// Client() trusts its certificate.
func StartTLS(opts Options) (*Server, error) { return start(opts, endpoint.StartTLS) }

// start builds a Server and serves its Handler with listen.
func start(opts Options, listen func(http.Handler) *endpoint.Endpoint) (*Server, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	s.Endpoint = listen(s.Handler())
	return s, nil
}

// Handler is the Roles Anywhere endpoint, to mount on any server.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// AddTrustAnchor adds or replaces a trust anchor.
func (s *Server) AddTrustAnchor(ta TrustAnchor) error {
	a, err := parseARN(ta.ARN)
	if err != nil || a.service != "rolesanywhere" || !strings.HasPrefix(a.resource, "trust-anchor/") || a.region == "" {
		return fmt.Errorf("fakera: %q is not a trust anchor ARN", ta.ARN)
	}
	if len(ta.CAs) == 0 {
		return fmt.Errorf("fakera: trust anchor %s has no CA certificate", ta.ARN)
	}
	pool := x509.NewCertPool()
	for _, c := range ta.CAs {
		pool.AddCert(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.anchors[ta.ARN] = &anchor{arn: a, pool: pool}
	return nil
}

// AddProfile adds or replaces a profile.
func (s *Server) AddProfile(p Profile) error {
	a, err := parseARN(p.ARN)
	if err != nil || a.service != "rolesanywhere" || !strings.HasPrefix(a.resource, "profile/") {
		return fmt.Errorf("fakera: %q is not a profile ARN", p.ARN)
	}
	if p.DurationSeconds == 0 {
		p.DurationSeconds = 3600
	}
	if p.DurationSeconds < minDuration || p.DurationSeconds > maxDuration {
		return fmt.Errorf("fakera: profile %s duration %d is outside %d..%d", p.ARN, p.DurationSeconds, minDuration, maxDuration)
	}
	p.RoleARNs = append([]string(nil), p.RoleARNs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.profiles[p.ARN] = p
	return nil
}

// Stats is a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	c := s.injector.Counts()
	st.Failed, st.Throttled, st.Dropped = c.Failed, c.Throttled, c.Dropped
	return st
}

// Accepted lists the granted requests in order.
func (s *Server) Accepted() []Accepted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Accepted(nil), s.accepted...)
}

// Issued answers "what did the fake issue under accessKeyID?".
func (s *Server) Issued(accessKeyID string) (Issued, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	is, ok := s.issued[accessKeyID]
	return is, ok
}

// WhoIs is the sts:GetCallerIdentity answer for credentials the fake
// issued; false for keys it does not know or that have expired.
func (s *Server) WhoIs(accessKeyID string) (Identity, bool) {
	s.mu.Lock()
	is, ok := s.issued[accessKeyID]
	s.mu.Unlock()
	if !ok || !s.clock.Now().Before(is.Expiration) {
		return Identity{}, false
	}
	return Identity{Account: is.Account, Arn: is.AssumedRoleARN, UserID: is.AssumedRoleID}, true
}

// countRequest counts a request before the knobs see it.
func (s *Server) countRequest() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
}

// record counts an outcome of a verified or refused request.
func (s *Server) record(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case status == http.StatusCreated:
		s.stats.Accepted++
	case status == http.StatusForbidden:
		s.stats.Denied++
	default:
		s.stats.Invalid++
	}
}

// issue creates and remembers credentials for a granted request.
func (s *Server) issue(v *verified, now time.Time) Issued {
	role, _ := parseARN(v.roleARN)
	roleName := role.resource[strings.LastIndexByte(role.resource, '/')+1:]
	session := v.body.RoleSessionName
	if session == "" {
		session = hex.EncodeToString(v.leaf.SerialNumber.Bytes())
	}
	exp := now.Add(time.Duration(v.duration) * time.Second).UTC().Truncate(time.Second)
	if v.leaf.NotAfter.Before(exp) {
		exp = v.leaf.NotAfter.UTC().Truncate(time.Second)
	}
	is := Issued{
		AccessKeyID:     "ASIA" + randomString(16, upperAlnum),
		SecretAccessKey: randomString(40, secretAlphabet),
		SessionToken:    "IQoJb3JpZ2luX2Vj" + randomString(300, secretAlphabet),
		RoleARN:         v.roleARN,
		SessionName:     session,
		AssumedRoleARN:  "arn:" + role.partition + ":sts::" + role.account + ":assumed-role/" + roleName + "/" + session,
		AssumedRoleID:   "AROA" + stableID(v.roleARN) + ":" + session,
		Account:         role.account,
		Serial:          v.leaf.SerialNumber.String(),
		Subject:         v.leaf.Subject.String(),
		TrustAnchorARN:  v.trustAnchorARN,
		ProfileARN:      v.profileARN,
		Expiration:      exp,
	}
	s.mu.Lock()
	s.issued[is.AccessKeyID] = is
	s.accepted = append(s.accepted, Accepted{
		Time:            now,
		Serial:          is.Serial,
		Subject:         is.Subject,
		RoleARN:         is.RoleARN,
		RoleSessionName: v.body.RoleSessionName,
		DurationSeconds: v.body.DurationSeconds,
		AccessKeyID:     is.AccessKeyID,
	})
	s.stats.Accepted++
	s.mu.Unlock()
	if s.onIssue != nil {
		s.onIssue(is)
	}
	return is
}

const (
	upperAlnum     = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	secretAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// randomString draws n characters of alphabet from crypto/rand.
func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

// stableID derives a fixed 17-character ID from s (role IDs stay stable).
func stableID(s string) string {
	sum := sha256.Sum256([]byte(s))
	var b strings.Builder
	for _, c := range sum[:17] {
		b.WriteByte(upperAlnum[int(c)%len(upperAlnum)])
	}
	return b.String()
}
