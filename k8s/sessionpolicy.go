package k8s

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SessionPolicyKey is the annotation with an inline session policy: on a
// pod (or, on the token door, its ServiceAccount) the pod's own, on a
// namespace the cap the cluster operator sets for every pod in it.
// EKS Pod Identity keeps the same thing as an association's policy.
const SessionPolicyKey = "iam.amazonaws.com/session-policy"

// MaxSessionPolicyChars is the most characters AWS takes in a session
// policy (plaintext, after kube2ra packs it: no insignificant whitespace).
const MaxSessionPolicyChars = 2048

// policyDocument is the part of an IAM policy kube2ra reads.
type policyDocument struct {
	// Version is "2012-10-17" (or the old "2008-10-17").
	Version string `json:"Version"`
	// Statement is one statement or a list of them.
	Statement json.RawMessage `json:"Statement"`
}

// parseSessionPolicy checks that raw is an IAM policy document and returns
// its statements, each packed.
func parseSessionPolicy(raw string) (version string, statements []json.RawMessage, err error) {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	var doc policyDocument
	if err := dec.Decode(&doc); err != nil {
		return "", nil, fmt.Errorf("it is not a JSON policy document with only Version and Statement: %v", err)
	}
	if dec.More() {
		return "", nil, errors.New("it has more than one JSON value")
	}
	if doc.Version != "2012-10-17" && doc.Version != "2008-10-17" {
		return "", nil, fmt.Errorf("its Version is %q: use \"2012-10-17\"", doc.Version)
	}
	if err := json.Unmarshal(doc.Statement, &statements); err != nil {
		var one json.RawMessage
		if err := json.Unmarshal(doc.Statement, &one); err != nil || len(one) == 0 || one[0] != '{' {
			return "", nil, errors.New("its Statement is neither a statement object nor a list of them")
		}
		statements = []json.RawMessage{one}
	}
	if len(statements) == 0 {
		return "", nil, errors.New("it has no statements")
	}
	for i, st := range statements {
		var s struct {
			Effect string `json:"Effect"`
		}
		if err := json.Unmarshal(st, &s); err != nil || (s.Effect != "Allow" && s.Effect != "Deny") {
			return "", nil, fmt.Errorf("statement %d has no Effect Allow or Deny", i+1)
		}
		var packed bytes.Buffer
		if err := json.Compact(&packed, st); err != nil {
			return "", nil, fmt.Errorf("statement %d: %v", i+1, err)
		}
		statements[i] = packed.Bytes()
	}
	return doc.Version, statements, nil
}

// effectOf is a packed statement's Effect.
func effectOf(st json.RawMessage) string {
	var s struct {
		Effect string `json:"Effect"`
	}
	_ = json.Unmarshal(st, &s)
	return s.Effect
}

// SessionPolicy is the one inline session policy a pod's session gets
// from its own policy (podRaw) and its namespace's cap (capRaw), "" when
// neither is set. AWS takes one inline policy per AssumeRole, and session
// policies passed together widen each other rather than intersect, so
// kube2ra sends one document that is exactly the stricter of the two:
// the cap's statements plus the pod's Deny statements. A pod policy that
// allows anything under a cap would widen nothing but cannot be expressed
// as an intersection, so it is refused, never dropped. The packed
// document must fit AWS's 2,048 characters.
func SessionPolicy(podRaw, capRaw string) (string, error) {
	podRaw, capRaw = strings.TrimSpace(podRaw), strings.TrimSpace(capRaw)
	if podRaw == "" && capRaw == "" {
		return "", nil
	}
	var version string
	var statements []json.RawMessage
	if capRaw != "" {
		v, sts, err := parseSessionPolicy(capRaw)
		if err != nil {
			return "", &sessionPolicyError{source: "namespace", err: err}
		}
		version, statements = v, sts
	}
	if podRaw != "" {
		v, sts, err := parseSessionPolicy(podRaw)
		if err != nil {
			return "", &sessionPolicyError{source: "pod", err: err}
		}
		if capRaw == "" {
			version, statements = v, sts
		} else {
			for i, st := range sts {
				if effectOf(st) != "Deny" {
					return "", &sessionPolicyError{source: "pod", err: fmt.Errorf("statement %d allows, but the namespace caps sessions with its own %s: under a cap a pod's policy may only add Deny statements (kube2ra sends the cap with them, which is exactly the stricter of the two)", i+1, SessionPolicyKey)}
				}
			}
			statements = append(statements, sts...)
		}
	}
	var b strings.Builder
	b.WriteString(`{"Version":"` + version + `","Statement":[`)
	for i, st := range statements {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(st)
	}
	b.WriteString("]}")
	if n := b.Len(); n > MaxSessionPolicyChars {
		source := "pod"
		if podRaw == "" {
			source = "namespace"
		}
		return "", &sessionPolicyError{source: source, err: fmt.Errorf("it packs to %d characters with the namespace cap, more than AWS's %d: shorten it", n, MaxSessionPolicyChars)}
	}
	return b.String(), nil
}

// sessionPolicyError is a session policy kube2ra will not send.
type sessionPolicyError struct {
	// source is "pod" or "namespace": whose annotation is wrong.
	source string
	// err says what is wrong.
	err error
}

func (e *sessionPolicyError) Error() string {
	return fmt.Sprintf("the %s's %s annotation is not usable: %v", e.source, SessionPolicyKey, e.err)
}
