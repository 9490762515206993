package credentials

import (
	"errors"
	"strings"
)

// Codes a Source uses for failures it finds before calling AWS.
const (
	// CodeCertificateExpired: the node certificate's notAfter has passed.
	CodeCertificateExpired = "CertificateExpired"
	// CodeCertificateNotYetValid: the node certificate's notBefore is ahead.
	CodeCertificateNotYetValid = "CertificateNotYetValid"
)

// Event reasons (and metric labels) of the upstream failures an operator
// must act on; ActionableFailure returns them.
const (
	ReasonUpstreamAccessDenied       = "UpstreamAccessDenied"
	ReasonUpstreamThrottled          = "UpstreamThrottled"
	ReasonNodeCertificateExpired     = "NodeCertificateExpired"
	ReasonNodeCertificateNotYetValid = "NodeCertificateNotYetValid"
	ReasonTargetRoleInvalid          = "TargetRoleInvalid"
	ReasonUpstreamRequestInvalid     = "UpstreamRequestInvalid"
)

// ActionableReasons are every reason ActionableFailure returns, for metrics
// present at zero from the start.
var ActionableReasons = []string{ReasonUpstreamAccessDenied, ReasonUpstreamThrottled, ReasonNodeCertificateExpired, ReasonNodeCertificateNotYetValid, ReasonTargetRoleInvalid, ReasonUpstreamRequestInvalid}

// Failure is an upstream failure told to the owner of the pod that asked:
// a reason and what to do. The message carries the AWS error code but not
// AWS's message, which can name the node's own role and instance (the
// agent's log has it).
type Failure struct {
	// Reason is one of the Reason* constants.
	Reason string
	// Message says what failed and what fixes it.
	Message string
}

// ActionableFailure classifies err as a failure someone must fix (a role
// that does not trust the node, a profile without the role, AWS
// throttling, a node certificate outside its validity); false for
// failures that pass by themselves (network, 5xx) or that the pod's own
// request caused (invalid input) and the local rate limit.
func ActionableFailure(err error) (Failure, bool) {
	var e *Error
	if !errors.As(err, &e) {
		return Failure{}, false
	}
	switch {
	case e.Code == CodeCertificateExpired:
		return Failure{ReasonNodeCertificateExpired, "the node's Roles Anywhere certificate has expired, so no role can be assumed on this node: renew the node certificate (--ra-certificate; the agent reloads it)"}, true
	case e.Code == CodeCertificateNotYetValid:
		return Failure{ReasonNodeCertificateNotYetValid, "the node's Roles Anywhere certificate is not valid yet: check the node's clock, or wait for the certificate's notBefore"}, true
	case e.Kind == KindDenied && e.Hop == HopTarget && strings.Contains(e.Message, "sts:TagSession"):
		return Failure{ReasonUpstreamAccessDenied, "AWS STS refused to tag the session of target role " + e.RoleARN + " (second hop): its trust policy must allow sts:TagSession for the first role (session tags are on, --session-tags), or turn session tags off"}, true
	case e.Kind == KindDenied && e.Hop == HopTarget:
		return Failure{ReasonUpstreamAccessDenied, "AWS STS refused AssumeRole of target role " + e.RoleARN + " (second hop, " + codeOr(e.Code, "AccessDenied") + "): its trust policy must allow the pod's first role to call sts:AssumeRole (with the external ID kube2ra sends when session tags are off, and sts:TagSession when they are on), and the first role's policy must allow sts:AssumeRole on it; the agent's log has AWS's message"}, true
	case e.Kind == KindDenied && e.Source == STSSourceName && e.Hop == HopFirst:
		return Failure{ReasonUpstreamAccessDenied, "AWS STS refused AssumeRole of " + e.RoleARN + " (first hop, " + codeOr(e.Code, "AccessDenied") + "): the role's trust policy must allow the node's role to call sts:AssumeRole; the agent's log has AWS's message"}, true
	case e.Kind == KindDenied && e.Source == STSSourceName && strings.Contains(e.Message, "sts:TagSession"):
		return Failure{ReasonUpstreamAccessDenied, "AWS STS refused to tag the session of " + e.RoleARN + ": its trust policy must allow sts:TagSession for the node's role (session tags are on, --session-tags), or turn session tags off"}, true
	case e.Kind == KindDenied && e.Source == STSSourceName:
		return Failure{ReasonUpstreamAccessDenied, "AWS STS refused AssumeRole of " + e.RoleARN + " (" + codeOr(e.Code, "AccessDenied") + "): the role's trust policy must allow the node's role to call sts:AssumeRole (and sts:TagSession with --session-tags); the agent's log has AWS's message"}, true
	case e.Kind == KindDenied:
		return Failure{ReasonUpstreamAccessDenied, "AWS refused credentials for " + e.RoleARN + hopNote(e.Hop) + " (" + codeOr(e.Code, "AccessDenied") + "): the role must be in the Roles Anywhere profile and trust rolesanywhere.amazonaws.com, and the node certificate must chain to the trust anchor; the agent's log has AWS's message"}, true
	case e.Kind == KindInvalid && e.Hop != "":
		// A chained request AWS or the agent refused as invalid: a target
		// in another partition, no --cluster-name for its external ID, a
		// session policy AWS would not take. The message says which.
		return Failure{ReasonTargetRoleInvalid, "credentials for " + e.RoleARN + " (" + string(e.Hop) + ") cannot be requested: " + codeOr(e.Code, "invalid") + ": " + invalidDetail(e)}, true
	case e.Kind == KindInvalid && e.Code != "":
		// AWS refused a one-role request as invalid: nothing retries it
		// into working, and without an Event its pods just get no
		// credentials.
		return Failure{ReasonUpstreamRequestInvalid, "AWS refused the credential request for " + e.RoleARN + " as invalid (" + e.Code + "): RegionDisabledException means STS is not activated for the account in this region (IAM, Account settings); PackedPolicyTooLarge, that the session tags and policy are too large (shorter names, or --session-tags off); ValidationError, a value AWS does not take (the pod's external ID annotation, the session name); the agent's log has AWS's message"}, true
	case e.Kind == KindThrottled && e.Code != "":
		return Failure{ReasonUpstreamThrottled, "AWS throttled the credential call for " + e.RoleARN + " (" + e.Code + "): the account's quota for the region is used up; raise it, lengthen sessions, or share sessions per node (--session-name=node); see README, Capacity"}, true
	}
	return Failure{}, false
}

func codeOr(code, def string) string {
	if code == "" {
		return def
	}
	return code
}

// hopNote is ", first hop" and the like for a chained request's error.
func hopNote(h Hop) string {
	if h == "" {
		return ""
	}
	return ", " + string(h)
}

// invalidDetail is what an invalid chained request's message may tell the
// pod's owner: the agent's own sentence, or AWS's code alone (AWS's
// message can name the node's role).
func invalidDetail(e *Error) string {
	if e.Code != "" {
		return "the agent's log has AWS's message"
	}
	return e.Message
}
