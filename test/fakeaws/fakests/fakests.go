// Package fakests is a fake AWS STS endpoint for tests: a real HTTP server
// that speaks the Query protocol (Version 2011-06-15), verifies SigV4
// signatures with the secrets it was configured with, enforces which callers
// may assume which roles (trust, ExternalId, sts:TagSession), and answers
// AssumeRole and GetCallerIdentity with the XML shapes STS uses. Knobs make it
// slow, failing, throttling or unreachable, and counters tell tests how often
// it was called.
package fakests

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/kube2ra/kube2ra/test/fakeaws/endpoint"
	"github.com/kube2ra/kube2ra/test/fakeaws/faults"
)

// DefaultRegion is the signing region the fake accepts when Options.Region
// is empty.
const DefaultRegion = "us-east-1"

// Principal is a caller with its own credentials: an IAM user, or a role
// session such as a node's instance profile.
type Principal struct {
	// AccessKeyID identifies the caller in the SigV4 Credential scope.
	AccessKeyID string
	// SecretAccessKey is the key the fake verifies signatures with.
	SecretAccessKey string
	// SessionToken, when set, must arrive in X-Amz-Security-Token.
	SessionToken string
	// ARN is who the caller is: arn:aws:iam::ACCOUNT:user/NAME or
	// arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION.
	ARN string
	// Expiration, when set, is when the credentials stop being accepted
	// (a Roles Anywhere session taught to the fake, say).
	Expiration time.Time
}

// Role is an assumable role and its trust policy.
type Role struct {
	// ARN is the role's ARN, arn:aws:iam::ACCOUNT:role/[PATH/]NAME.
	ARN string
	// Trust lists the principals that may assume the role: user or role
	// ARNs, assumed-role session ARNs, arn:aws:iam::ACCOUNT:root for a whole
	// account, or "*".
	Trust []string
	// ExternalID, when set, is a condition: AssumeRole must pass exactly it.
	ExternalID string
	// AllowTagSession grants sts:TagSession; without it tagged calls are denied.
	AllowTagSession bool
	// MaxSessionDuration is the role's MaxSessionDuration; 0 means 1 h as in IAM.
	MaxSessionDuration time.Duration
}

// Options configure a Server.
type Options struct {
	// Region is the signing region requests must be scoped to; DefaultRegion if empty.
	Region string
	// Principals are the callers with long-lived credentials.
	Principals []Principal
	// Roles are the roles that exist.
	Roles []Role
	// Clock issues and expires sessions; the real clock if nil.
	Clock clock.PassiveClock
	// SigningClock checks the request time in signatures (±5 min); the real
	// clock if nil, because SDKs sign with the real time even when a test
	// drives Clock.
	SigningClock clock.PassiveClock
	// IssuedElsewhere, when set, is asked about access keys the fake does
	// not know: credentials another fake issued (Roles Anywhere's Issued),
	// accepted with the same signature and expiry checks.
	IssuedElsewhere func(accessKeyID string) (Principal, bool)
}

// Session is what the fake remembers about credentials it issued.
type Session struct {
	// AccessKeyID is the issued ASIA... key.
	AccessKeyID string
	// RoleARN is the role assumed.
	RoleARN string
	// AssumedRoleARN is arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION.
	AssumedRoleARN string
	// AssumedRoleID is ROLEID:SESSION.
	AssumedRoleID string
	// SessionName is the RoleSessionName passed.
	SessionName string
	// ExternalID is the ExternalId passed, empty when none.
	ExternalID string
	// Tags are the session's tags: those passed and those inherited as
	// transitive from the caller's session; nil when none.
	Tags map[string]string
	// TransitiveTagKeys are the tag keys that pass on to sessions this one
	// assumes (passed and inherited), sorted; nil when none.
	TransitiveTagKeys []string
	// Policy is the inline session policy passed, "" when none.
	Policy string
	// DurationSeconds is what the call asked for (0 when it sent none).
	DurationSeconds int
	// SourceARN is the caller that assumed the role.
	SourceARN string
	// Chain is every identity that led to this session, as CloudTrail's
	// sessionIssuer chain would show it: the long-lived principal (or a
	// session the fake was taught, such as Roles Anywhere's) first, the
	// caller (SourceARN) last.
	Chain []string
	// Expiration is when the session stops being accepted.
	Expiration time.Time
	// secretAccessKey verifies requests signed with this session.
	secretAccessKey string
	// sessionToken must accompany requests signed with this session.
	sessionToken string
	// seq orders sessions by issue.
	seq int
}

// Server is the fake STS endpoint. Its methods are safe for concurrent use.
type Server struct {
	// region is the signing region requests must be scoped to.
	region string
	// clock issues and expires sessions.
	clock clock.PassiveClock
	// signingClock checks signature times.
	signingClock clock.PassiveClock
	// issuedElsewhere is Options.IssuedElsewhere.
	issuedElsewhere func(accessKeyID string) (Principal, bool)
	// Knobs make the fake slow, unreachable, or answer 500 InternalFailure
	// or 400 Throttling "Rate exceeded".
	faults.Knobs
	// injector applies the knobs to each request.
	injector *faults.Injector
	// Endpoint serves Handler (Start, Serve) and gives its URL, Client and
	// Close.
	*endpoint.Endpoint

	// mu guards everything below.
	mu sync.Mutex
	// principals maps access key ID to long-lived callers.
	principals map[string]Principal
	// roles maps role ARN to role.
	roles map[string]Role
	// sessions maps issued access key ID to session.
	sessions map[string]*Session
	// calls counts received requests by Action.
	calls map[string]int
	// total counts all received requests.
	total int
}

// New builds a Server without listening; use Start, Serve or Handler.
func New(opts Options) (*Server, error) {
	s := &Server{
		region:          opts.Region,
		clock:           opts.Clock,
		signingClock:    opts.SigningClock,
		issuedElsewhere: opts.IssuedElsewhere,
		principals:      map[string]Principal{},
		roles:           map[string]Role{},
		sessions:        map[string]*Session{},
		calls:           map[string]int{},
		injector: faults.New(faults.Options{
			FailAnswer: func(w http.ResponseWriter) {
				writeError(w, apiError{http.StatusInternalServerError, "InternalFailure", "The request processing has failed because of an unknown error, exception or failure."})
			},
			ThrottleAnswer: func(w http.ResponseWriter) {
				writeError(w, apiError{http.StatusBadRequest, "Throttling", "Rate exceeded"})
			},
		}),
	}
	s.Knobs = s.injector
	s.Endpoint = endpoint.New(s.Handler())
	if s.region == "" {
		s.region = DefaultRegion
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	if s.signingClock == nil {
		s.signingClock = clock.RealClock{}
	}
	for _, p := range opts.Principals {
		if err := s.AddPrincipal(p); err != nil {
			return nil, err
		}
	}
	for _, r := range opts.Roles {
		if err := s.AddRole(r); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start builds a Server and serves it on a loopback port; Close stops it.
func Start(opts Options) (*Server, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	s.Endpoint = endpoint.Start(s.Handler())
	return s, nil
}

// Handler is the STS endpoint, to mount on any server.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// AddPrincipal adds or replaces a caller.
func (s *Server) AddPrincipal(p Principal) error {
	if p.AccessKeyID == "" || p.SecretAccessKey == "" {
		return errors.New("fakests: a principal needs AccessKeyID and SecretAccessKey")
	}
	if _, err := parseCallerARN(p.ARN); err != nil {
		return fmt.Errorf("fakests: principal %s: %w", p.AccessKeyID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.principals[p.AccessKeyID] = p
	return nil
}

// AddRole adds or replaces a role (and so its trust policy).
func (s *Server) AddRole(r Role) error {
	if _, _, ok := parseRoleARN(r.ARN); !ok {
		return fmt.Errorf("fakests: role ARN %q is not arn:PARTITION:iam::ACCOUNT:role/NAME", r.ARN)
	}
	if r.MaxSessionDuration == 0 {
		r.MaxSessionDuration = time.Hour
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles[r.ARN] = r
	return nil
}

// RemoveRole deletes a role; assuming it is then denied.
func (s *Server) RemoveRole(arn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.roles, arn)
}

// SetThrottle answers every request 400 Throttling "Rate exceeded" while on
// (SetThrottlePercent(100) and (0)).
func (s *Server) SetThrottle(on bool) {
	p := 0
	if on {
		p = 100
	}
	s.injector.SetThrottlePercent(p)
}

// Calls is how many requests for action (AssumeRole, GetCallerIdentity, ...)
// arrived, whatever their outcome.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// TotalCalls is how many requests arrived in all.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Issued is how many sessions AssumeRole issued.
func (s *Server) Issued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Matches reports whether secret and token are exactly what the fake issued
// with accessKeyID, so tests can prove a client received those credentials
// and no others (Session hides the secrets).
func (s *Server) Matches(accessKeyID, secret, token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[accessKeyID]
	return ok && sess.secretAccessKey == secret && sess.sessionToken == token
}

// Session answers "who is access key id?" for keys the fake issued.
func (s *Server) Session(accessKeyID string) (Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[accessKeyID]
	if !ok {
		return Session{}, false
	}
	return sess.public(), true
}

// Sessions are every session issued for roleARN, oldest first.
func (s *Server) Sessions(roleARN string) []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Session
	for _, sess := range s.sessions {
		if sess.RoleARN == roleARN {
			out = append(out, sess.public())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// public is a copy of sess without its secrets, sharing no slices or maps.
func (sess *Session) public() Session {
	out := *sess
	out.secretAccessKey, out.sessionToken = "", ""
	out.Chain = append([]string(nil), sess.Chain...)
	out.TransitiveTagKeys = append([]string(nil), sess.TransitiveTagKeys...)
	if sess.Tags != nil {
		out.Tags = make(map[string]string, len(sess.Tags))
		for k, v := range sess.Tags {
			out.Tags[k] = v
		}
	}
	return out
}

// countCall counts a request for action before the knobs see it.
func (s *Server) countCall(action string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[action]++
	s.total++
}

// caller is an authenticated request's identity.
type caller struct {
	// arn is what GetCallerIdentity answers and AccessDenied names.
	arn string
	// trustARN is what trust policies match: the role ARN for role sessions.
	trustARN string
	// account is the caller's account ID.
	account string
	// userID is what GetCallerIdentity answers as UserId.
	userID string
	// chained is true when the caller is itself a role session.
	chained bool
	// chain is the identities that led to the caller, the caller last.
	chain []string
	// tags are the caller's session tags that pass on (transitive).
	transitive map[string]string
}

// parseCallerARN derives a caller from a configured principal ARN.
func parseCallerARN(arn string) (caller, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[4] == "" {
		return caller{}, fmt.Errorf("ARN %q is not arn:PARTITION:SERVICE::ACCOUNT:RESOURCE", arn)
	}
	c := caller{arn: arn, trustARN: arn, account: parts[4], userID: "AIDA" + stableID(arn)}
	if parts[2] == "sts" && strings.HasPrefix(parts[5], "assumed-role/") {
		fields := strings.Split(parts[5], "/")
		if len(fields) != 3 {
			return caller{}, fmt.Errorf("ARN %q is not arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION", arn)
		}
		roleARN := "arn:" + parts[1] + ":iam::" + parts[4] + ":role/" + fields[1]
		c.trustARN = roleARN
		c.userID = "AROA" + stableID(roleARN) + ":" + fields[2]
		c.chained = true
	}
	return c, nil
}
