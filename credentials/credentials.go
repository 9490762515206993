// Package credentials owns the Source interface, the credential cache that
// wraps any Source, and the STS source.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Tag is one STS session tag.
type Tag struct {
	Key   string
	Value string
}

// Request names one set of temporary credentials. Two requests that are
// equal get the same credentials; everything that changes what AWS issues is
// in here, so a cache keyed by Request never hands one pod's session to
// another.
type Request struct {
	// RoleARN is the full IAM role ARN to assume.
	RoleARN string
	// ExternalID is passed to sts:AssumeRole; empty when none.
	ExternalID string
	// SessionName is the role session name; empty lets the source choose
	// (Roles Anywhere then sends none).
	SessionName string
	// Tags are STS session tags sorted by key; nil when tagging is off.
	// With a target role they are set on the target hop only.
	Tags []Tag
	// TransitiveTags makes every tag transitive (TransitiveTagKeys): it
	// passes on to roles the session assumes in turn.
	TransitiveTags bool
	// TargetRoleARN, when set, is a second role assumed with the first
	// role's credentials (role chaining, as EKS Pod Identity's target
	// role): the credentials returned are the target's.
	TargetRoleARN string
	// TargetExternalID is ExternalId of the target hop; empty for none.
	TargetExternalID string
	// TargetSessionName is RoleSessionName of the target hop; required
	// with TargetRoleARN.
	TargetSessionName string
	// Policy is an inline session policy (JSON) for the last hop; empty
	// for none. Session policies can only narrow what the role allows.
	Policy string
}

// Chained reports whether the request names a target role.
func (r Request) Chained() bool { return r.TargetRoleARN != "" }

// FirstHop is the request for the first role of a chained request: no
// tags and no policy, which belong to the target hop.
func (r Request) FirstHop() Request {
	return Request{RoleARN: r.RoleARN, ExternalID: r.ExternalID, SessionName: r.SessionName}
}

// ServedRoleARN is the role whose credentials the request returns.
func (r Request) ServedRoleARN() string {
	if r.Chained() {
		return r.TargetRoleARN
	}
	return r.RoleARN
}

// Key is a stable string form of the request, usable as a map key. Each
// field is length-prefixed, so no choice of field values (an external ID
// from a pod annotation, say) can make two different requests share a key.
func (r Request) Key() string {
	fields := r.scalarFields()
	n := len(r.Tags) * 2 * keyLenPrefixBytes
	for _, f := range fields {
		n += len(f) + keyLenPrefixBytes
	}
	for _, t := range r.Tags {
		n += len(t.Key) + len(t.Value) + 2*keyLenPrefixBytes
	}
	var b strings.Builder
	b.Grow(n)
	for _, f := range fields {
		writeKeyField(&b, f)
	}
	for _, t := range r.Tags {
		writeKeyField(&b, t.Key)
		writeKeyField(&b, t.Value)
	}
	return b.String()
}

// scalarFields are the request's fields but Tags, in a fixed order.
func (r Request) scalarFields() [8]string {
	transitive := ""
	if r.TransitiveTags {
		transitive = "transitive"
	}
	return [8]string{r.RoleARN, r.ExternalID, r.SessionName, r.TargetRoleARN, r.TargetExternalID, r.TargetSessionName, r.Policy, transitive}
}

// keyLenPrefixBytes is room for one length prefix ("123:") in Key.
const keyLenPrefixBytes = 8

// writeKeyField writes len(s) ':' s.
func writeKeyField(b *strings.Builder, s string) {
	var num [20]byte
	b.Write(strconv.AppendInt(num[:0], int64(len(s)), 10))
	b.WriteByte(':')
	b.WriteString(s)
}

// Credentials are temporary AWS credentials as IMDS serves them.
type Credentials struct {
	// AccessKeyID is the temporary access key (ASIA...).
	AccessKeyID string
	// SecretAccessKey is secret: never logged.
	SecretAccessKey string
	// SessionToken is secret: never logged.
	SessionToken string
	// Expiration is when AWS stops accepting these credentials.
	Expiration time.Time
	// LastUpdated is when kube2ra obtained them.
	LastUpdated time.Time
}

// String hides the secret parts so Credentials can be logged safely.
func (c Credentials) String() string {
	return fmt.Sprintf("Credentials{AccessKeyID: %s, Expiration: %s}", c.AccessKeyID, c.Expiration.UTC().Format(time.RFC3339))
}

// Source obtains credentials from AWS (STS AssumeRole or Roles Anywhere
// CreateSession). Implementations return *Error for failures AWS reported
// or that prevented the call.
type Source interface {
	// Name is a short label for metrics and logs: "sts" or "rolesanywhere".
	Name() string
	// Fetch makes one upstream call for req.
	Fetch(ctx context.Context, req Request) (Credentials, error)
}

// ErrorKind tells callers what to do about a failed fetch.
type ErrorKind int

const (
	// KindUnavailable: AWS could not be reached or answered 5xx; retry later.
	KindUnavailable ErrorKind = iota
	// KindDenied: AWS refused (AccessDenied, untrusted certificate, ...).
	KindDenied
	// KindThrottled: AWS asked us to slow down.
	KindThrottled
	// KindInvalid: the request itself is wrong (bad ARN, bad duration, ...).
	KindInvalid
)

func (k ErrorKind) String() string {
	switch k {
	case KindDenied:
		return "denied"
	case KindThrottled:
		return "throttled"
	case KindInvalid:
		return "invalid"
	default:
		return "unavailable"
	}
}

// Error is a failed fetch with the service's own code and message.
type Error struct {
	// Kind classifies the failure.
	Kind ErrorKind
	// Source is the Source's Name.
	Source string
	// RoleARN is the role that was asked for.
	RoleARN string
	// Hop says which role of a chained request failed (HopFirst or
	// HopTarget); empty for a request without a target role.
	Hop Hop
	// Code is the AWS error code (AccessDenied, ThrottlingException, ...), if any.
	Code string
	// Message is the service's message, if any.
	Message string
	// Err is the underlying error, if any.
	Err error
}

// Hop names one role of a chained request.
type Hop string

const (
	// HopFirst is the first role: Roles Anywhere CreateSession or STS
	// AssumeRole with the node's credentials.
	HopFirst Hop = "first hop"
	// HopTarget is the target role, assumed with the first role's credentials.
	HopTarget Hop = "second hop (target role)"
)

func (e *Error) Error() string {
	role := e.RoleARN
	if e.Hop != "" {
		role += ", " + string(e.Hop)
	}
	msg := fmt.Sprintf("%s: getting credentials for %s failed (%s)", e.Source, role, e.Kind)
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err, KindUnavailable when err is not an *Error.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnavailable
}
