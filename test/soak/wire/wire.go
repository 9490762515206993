// Package wire is what the soak's load clients report to the driver: one
// JSON line per request on the client's stdout, and the control words the
// driver writes to the client's stdin. Neither side ever carries a secret
// access key, session token or IMDS token: a client reports the access key
// ID and what it found, the driver judges.
package wire

import "strings"

// Kinds of request a client makes.
const (
	// KindToken is PUT /latest/api/token.
	KindToken = "token"
	// KindList is GET .../iam/security-credentials/ (the role name).
	KindList = "list"
	// KindCreds is GET .../iam/security-credentials/{name}.
	KindCreds = "creds"
	// KindPass is an allowlisted pass-through path (region, identity document).
	KindPass = "pass"
	// KindForbidden is a path or request that must never be answered 200.
	KindForbidden = "forbidden"
	// KindForeign asks for a role name that is not the pod's.
	KindForeign = "foreign"
	// KindSlow is a slowloris summary line.
	KindSlow = "slow"
	// KindPaused acknowledges a pause: the client's idle connections are closed.
	KindPaused = "paused"
)

// Control words, one per line on the client's stdin.
const (
	// Pause stops requests and closes idle connections, then acknowledges.
	Pause = "pause"
	// Resume starts requests again.
	Resume = "resume"
)

// Transport error classes.
const (
	ErrRefused     = "refused"
	ErrTimeout     = "timeout"
	ErrReset       = "reset"
	ErrUnreachable = "unreachable"
	ErrOther       = "other"
)

// Result is one request as the client saw it.
type Result struct {
	// Kind is one of the Kind constants.
	Kind string `json:"k"`
	// Path is what was asked (a label for hostile requests).
	Path string `json:"p,omitempty"`
	// Start and End are Unix nanoseconds around the request.
	Start int64 `json:"s"`
	End   int64 `json:"e"`
	// Status is the HTTP status, 0 when there was no answer.
	Status int `json:"st"`
	// Err is the transport error class when there was no answer.
	Err string `json:"err,omitempty"`
	// ErrText is the transport error, for the log (never holds secrets).
	ErrText string `json:"et,omitempty"`
	// AccessKeyID is the key in a 200 credential document.
	AccessKeyID string `json:"ak,omitempty"`
	// RoleName is the role name listed, or asked for (KindCreds, KindForeign).
	RoleName string `json:"rn,omitempty"`
	// Token says the request carried an IMDSv2 token.
	Token bool `json:"tok,omitempty"`
	// KeepAlive says the request may have reused a connection.
	KeepAlive bool `json:"ka,omitempty"`
	// Leak names what of the node's secrets the answer contained.
	Leak string `json:"leak,omitempty"`
	// Bad says what is wrong with a 200 answer's shape (not a valid
	// credential document, wrong region...).
	Bad string `json:"bad,omitempty"`

	// Slowloris summary (KindSlow): connections open now, opened and
	// closed by the server since the start, answered with a status, and
	// the longest a connection lived, in milliseconds.
	Open     int   `json:"open,omitempty"`
	Opened   int   `json:"opened,omitempty"`
	Closed   int   `json:"closed,omitempty"`
	Answered int   `json:"answered,omitempty"`
	MaxLife  int64 `json:"maxlife,omitempty"`
	DialErrs int   `json:"dialerrs,omitempty"`
}

// LeakIn names the node secret that body contains, or "" when none:
// anything with marker (the fake metadata service puts it in the node's
// credentials, user-data and signed documents) or the node's access key ID.
func LeakIn(body, marker, nodeKeyID string) string {
	switch {
	case marker != "" && strings.Contains(body, marker):
		return "node secret marker"
	case nodeKeyID != "" && strings.Contains(body, nodeKeyID):
		return "node access key"
	}
	return ""
}
