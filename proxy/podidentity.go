package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
)

// PodIdentityPath is the token door's one route: what the EKS Pod Identity
// Agent serves at 169.254.170.23 and what AWS_CONTAINER_CREDENTIALS_FULL_URI
// points SDKs at. IMDS has no "v1" version, so it never shadows an IMDS path.
const PodIdentityPath = "/v1/credentials"

// PodAuthenticator finds the live pod of this node a ServiceAccount token
// belongs to. It returns a *k8s.TokenError for a refused token or a pod
// that is not here, and errors wrapping k8s.ErrTokenKeys or
// k8s.ErrNotSynced when it cannot tell now.
type PodAuthenticator interface {
	AuthenticatePod(ctx context.Context, token string) (*k8s.Pod, error)
}

// NodeAddresses says whether an address is one of the node's own
// (loopback included): where a host-network pod's requests come from. It
// is asked on every such request, so it answers from memory.
type NodeAddresses interface {
	Contains(ip netip.Addr) bool
}

// PodIdentity opens the token door. Every field is required to open it.
type PodIdentity struct {
	// Pods authenticates the caller's token.
	Pods PodAuthenticator
	// Roles picks the pod's role (the pod's annotation, else its
	// ServiceAccount's) through the metadata door's resolver.
	Roles RoleResolver
	// NodeAddrs are the node's own addresses, the only ones a host-network
	// pod's token is accepted from.
	NodeAddrs NodeAddresses
}

// Results, the "result" label of kube2ra_pod_identity_requests_total, beside
// the k8s.TokenRejection values.
const (
	piSuccess          = "success"
	piBadMethod        = "bad_method"
	piNoRole           = "no_role"
	piRoleDenied       = "role_denied"
	piNotSynced        = "not_synced"
	piKeysUnavailable  = "keys_unavailable"
	piCredentialsError = "credentials_error"
	piInternalError    = "internal_error"
	piSourceMismatch   = "source_mismatch"
	piNoPodIP          = "pod_ip_unknown"
)

// Error codes in the token door's JSON error body. aws-sdk-go-v2 puts code
// and message in its error; it retries 500, 502, 503, 504 and 429 and
// nothing else, and botocore retries every non-200 three times, so only
// "try again later" answers are 5xx.
const (
	piCodeBadRequest   = "InvalidTokenError"
	piCodeUnauthorized = "AccessDeniedException"
	piCodeForbidden    = "AccessDeniedException"
	piCodeUnavailable  = "ServiceUnavailableException"
	piCodeInternal     = "InternalServerException"
)

// containerCredentials is the container-credentials document every SDK's
// HTTP credential provider reads (Expiration in RFC 3339).
type containerCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	AccountID       string `json:"AccountId,omitempty"`
	Expiration      string `json:"Expiration"`
}

// endpointError is the error body the SDKs' container-credentials clients
// decode: aws-sdk-go-v2's endpointcreds and Java v2 read "code" and
// "message" (Go only with Content-Type application/json), the JavaScript
// SDK v3's fromHttp "Code" and "Message"; both spellings carry the same
// values (the EKS agent answers text/plain, which none of them reads).
type endpointError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// CodeJS and MessageJS repeat Code and Message for the JavaScript SDK.
	CodeJS    string `json:"Code"`
	MessageJS string `json:"Message"`
}

// servePodIdentity answers GET /v1/credentials: the caller is the pod its
// Authorization token names, never its source address.
func (s *Server) servePodIdentity(ctx context.Context, w http.ResponseWriter, r *http.Request, info *requestInfo) {
	info.route = routePodIdentity
	if r.Method != http.MethodGet {
		s.refusePodIdentity(w, info, http.StatusMethodNotAllowed, piBadMethod, piCodeBadRequest, "only GET is served", nil)
		return
	}
	token, ok := authorizationToken(r.Header)
	if !ok {
		s.refusePodIdentity(w, info, http.StatusBadRequest, string(k8s.TokenMalformed), piCodeBadRequest, "send exactly one Authorization header with the pod's ServiceAccount token", nil)
		return
	}
	pod, err := s.podIdentity.Pods.AuthenticatePod(ctx, token)
	if err != nil {
		s.refuseAuthentication(w, info, err)
		return
	}
	info.pod = pod
	if !s.sourceMatches(ctx, w, info, pod) {
		return
	}
	role, err := s.podIdentity.Roles.ResolveRole(ctx, pod)
	if err == nil && (role.ARN == "" || role.Name == "") {
		err = fmt.Errorf("the role resolver returned a role without ARN or name (%q, %q)", role.ARN, role.Name)
	}
	if err != nil {
		s.refuseRole(w, info, pod, err)
		return
	}
	info.role = role.ARN
	creds, err := s.creds.GetCredentials(ctx, pod, role)
	if err == nil && (creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.SessionToken == "" || creds.Expiration.IsZero()) {
		err = fmt.Errorf("the credential getter returned incomplete credentials (%s)", creds)
	}
	if err != nil {
		status, code := http.StatusInternalServerError, piCodeInternal
		if credentialErrorStatus(err) == http.StatusServiceUnavailable {
			status, code = http.StatusServiceUnavailable, piCodeUnavailable
		}
		// AWS's message stays in the log: it may name accounts and policies.
		s.refusePodIdentity(w, info, status, piCredentialsError, code, "kube2ra could not get credentials for role "+role.ARN+"; the agent's log says why", err)
		info.reason = credentialErrorReason(err)
		return
	}
	account := role.AccountID
	doc, first, err := s.podIdentityDocs.documentWith(creds, pod.UID, func(c credentials.Credentials) ([]byte, error) {
		return json.Marshal(containerCredentials{
			AccessKeyID:     c.AccessKeyID,
			SecretAccessKey: c.SecretAccessKey,
			Token:           c.SessionToken,
			AccountID:       account,
			Expiration:      c.Expiration.UTC().Format(time.RFC3339),
		})
	})
	if err != nil {
		s.refusePodIdentity(w, info, http.StatusInternalServerError, piInternalError, piCodeInternal, "encoding the credentials failed", err)
		return
	}
	info.accessKeyID, info.expiration = creds.AccessKeyID, creds.Expiration
	// SDKs re-read credentials they hold; the first serving to each pod is
	// logged at info, repeats at debug, as on the metadata door.
	info.routine = !first
	s.metrics.countPodIdentity(piSuccess)
	writeEncoded(w, http.StatusOK, applicationJSON, doc)
}

// sourceMatches refuses a token that arrives from an address its pod
// does not own: a token copied elsewhere is worth nothing there. The
// token names the caller; the address only has to agree. A pod network
// pod must be the one owner of the source address under the metadata
// door's rule (FindPod): a terminating pod owns nothing, as its address
// may already be another pod's. A host-network pod shares the node's
// addresses, so its token counts only from one of them (any process on
// the node that can read the token file could also read the node's own
// credentials). A pod whose IP the cache does not know yet, or whose
// address's owner cannot be confirmed now, is asked to retry (503).
func (s *Server) sourceMatches(ctx context.Context, w http.ResponseWriter, info *requestInfo, pod *k8s.Pod) bool {
	mismatch := func(message string, err error) bool {
		s.refusePodIdentity(w, info, http.StatusForbidden, piSourceMismatch, piCodeForbidden, message, err)
		return false
	}
	if pod.HostNetwork {
		if s.podIdentity.NodeAddrs.Contains(info.ip) {
			return true
		}
		return mismatch("the token belongs to host-network pod "+pod.Key()+", and this request did not come from the node's own addresses",
			fmt.Errorf("token of host-network pod %s sent from %s, not an address of this node", pod.Key(), info.ip))
	}
	if len(pod.IPs) > 0 && !slices.ContainsFunc(pod.IPs, func(ip netip.Addr) bool { return ip.Unmap() == info.ip }) {
		return mismatch("the token belongs to pod "+pod.Key()+", which does not have the address this request came from",
			fmt.Errorf("token of pod %s (IPs %v) sent from %s", pod.Key(), pod.IPs, info.ip))
	}
	// The address's one owner under the metadata door's rule must be this
	// very pod. While the API has no address for the pod, the lookup waits
	// for it, and may know it sooner from the node's runtime
	// (--cni-results-dir).
	const notOwned = "the token belongs to pod %s, which does not own the address this request came from (a terminating pod owns none)"
	owner, err := s.pods.FindPod(ctx, info.ip)
	switch {
	case err == nil && owner != nil && owner.UID == pod.UID:
		return true
	case errors.Is(err, k8s.ErrNotSynced):
		s.refusePodIdentity(w, info, http.StatusServiceUnavailable, piNotSynced, piCodeUnavailable, "the agent cannot confirm who owns this address now; retry", err)
		return false
	case len(pod.IPs) == 0 && err != nil && !errors.Is(err, k8s.ErrAmbiguousIP):
		s.refusePodIdentity(w, info, http.StatusServiceUnavailable, piNoPodIP, piCodeUnavailable,
			"the agent does not know pod "+pod.Key()+"'s IP yet; retry", fmt.Errorf("pod %s has no IP in the cache: %w", pod.Key(), err))
		return false
	case err != nil:
		return mismatch(fmt.Sprintf(notOwned, pod.Key()), fmt.Errorf("token of pod %s sent from %s, which it does not own: %w", pod.Key(), info.ip, err))
	default:
		return mismatch(fmt.Sprintf(notOwned, pod.Key()), fmt.Errorf("token of pod %s sent from %s, which pod %v owns", pod.Key(), info.ip, ownerKey(owner)))
	}
}

// ownerKey names an address's owner for the log.
func ownerKey(p *k8s.Pod) string {
	if p == nil {
		return "no pod"
	}
	return p.Key() + " (UID " + string(p.UID) + ")"
}

// authorizationToken is the one Authorization header's value: the raw
// token, as the SDKs send it (a "Bearer " prefix, which curl users add, is
// accepted too).
func authorizationToken(h http.Header) (string, bool) {
	vals := h["Authorization"]
	if len(vals) != 1 {
		return "", false
	}
	tok := strings.TrimSpace(vals[0])
	if len(tok) > 7 && strings.EqualFold(tok[:7], "bearer ") {
		tok = strings.TrimSpace(tok[7:])
	}
	return tok, tok != ""
}

// refuseAuthentication answers a failed authentication: 400 for a token
// that is not one, 401 for one that proves nothing, 403 for a valid token
// whose pod is not a live pod of this node, 503 while the keys or the pod
// cache cannot be trusted (SDKs retry).
func (s *Server) refuseAuthentication(w http.ResponseWriter, info *requestInfo, err error) {
	var te *k8s.TokenError
	switch {
	case errors.As(err, &te) && (te.Reason == k8s.TokenMissing || te.Reason == k8s.TokenMalformed):
		s.refusePodIdentity(w, info, http.StatusBadRequest, string(te.Reason), piCodeBadRequest, te.Detail, err)
	case errors.As(err, &te) && te.Unauthenticated():
		s.refusePodIdentity(w, info, http.StatusUnauthorized, string(te.Reason), piCodeUnauthorized, te.Detail, err)
	case errors.As(err, &te):
		s.refusePodIdentity(w, info, http.StatusForbidden, string(te.Reason), piCodeForbidden, te.Detail, err)
	case errors.Is(err, k8s.ErrTokenKeys):
		s.refusePodIdentity(w, info, http.StatusServiceUnavailable, piKeysUnavailable, piCodeUnavailable, "the cluster's token signing keys cannot be read now; retry", err)
	case errors.Is(err, k8s.ErrNotSynced):
		s.refusePodIdentity(w, info, http.StatusServiceUnavailable, piNotSynced, piCodeUnavailable, "the agent cannot confirm the pod now; retry", err)
	default:
		s.refusePodIdentity(w, info, http.StatusInternalServerError, piInternalError, piCodeInternal, "authenticating the token failed", err)
	}
}

// refuseRole answers a pod without a role it may have: 403 (no role, or
// the namespace's policy does not allow it), 503 while the caches cannot
// be trusted, 500 otherwise.
func (s *Server) refuseRole(w http.ResponseWriter, info *requestInfo, pod *k8s.Pod, err error) {
	var denial *k8s.DenialError
	switch {
	case errors.Is(err, k8s.ErrNoRole):
		s.refusePodIdentity(w, info, http.StatusForbidden, piNoRole, piCodeForbidden,
			fmt.Sprintf("neither pod %s nor its ServiceAccount %q names a role", pod.Key(), pod.ServiceAccount), err)
	case errors.As(err, &denial):
		s.refusePodIdentity(w, info, http.StatusForbidden, piRoleDenied, piCodeForbidden, denial.Error(), err)
	case errors.Is(err, k8s.ErrNotSynced):
		s.refusePodIdentity(w, info, http.StatusServiceUnavailable, piNotSynced, piCodeUnavailable, "the agent cannot confirm the pod's role now; retry", err)
	default:
		s.refusePodIdentity(w, info, http.StatusInternalServerError, piInternalError, piCodeInternal, "resolving the pod's role failed", err)
	}
}

// refusePodIdentity answers an error in the EKS agent's shape and counts it.
func (s *Server) refusePodIdentity(w http.ResponseWriter, info *requestInfo, status int, result, code, message string, err error) {
	info.reason, info.err = result, err
	s.metrics.denials.WithLabelValues(result).Inc()
	s.metrics.countPodIdentity(result)
	body, mErr := json.Marshal(endpointError{Code: code, Message: message, CodeJS: code, MessageJS: message})
	if mErr != nil {
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	writeJSON(w, status, body)
}

// writeJSON answers status with a JSON body.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = applicationJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
