package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
)

// imdsTimeLayout is how IMDS writes times; botocore parses exactly this.
const imdsTimeLayout = "2006-01-02T15:04:05Z"

// Denial reasons that are not k8s.DenialReason values.
const (
	reasonPodNotFound      = "PodNotFound"
	reasonAmbiguousIP      = "AmbiguousIP"
	reasonNotSynced        = "NotSynced"
	reasonLookupError      = "LookupError"
	reasonNoRole           = "NoRole"
	reasonResolveError     = "ResolveError"
	reasonRoleNameMismatch = "RoleNameMismatch"
	reasonPathNotAllowed   = "PathNotAllowed"
	reasonForwardedFor     = "ForwardedFor"
	reasonBadTokenTTL      = "BadTokenTTL"
	reasonNotTokenRoute    = "NotTokenRoute"
	reasonDatedTokenRoute  = "DatedTokenRoute"
)

// serveTokenRoute answers every path below api/. Only PUT /latest/api/token,
// exactly, mints a token; everything else gets what IMDS gives and never a
// token: another method on the route 405, a PUT to a dated version's
// api/token 403 (IMDS only mints under latest), and any other spelling
// (trailing slash, other letter case, a path below it) 404.
func (s *Server) serveTokenRoute(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	c := info.path
	info.route = routeToken
	switch {
	case c.raw == tokenPath && r.Method == http.MethodPut:
		s.handleToken(w, r, info)
	case c.raw == tokenPath:
		info.route = routeMethodNotAllowed
		s.deny(w, info, http.StatusMethodNotAllowed, "MethodNotAllowed")
	case r.Method == http.MethodPut && c.raw == "/"+c.version+"/api/token":
		s.deny(w, info, http.StatusForbidden, reasonDatedTokenRoute)
	default:
		s.deny(w, info, http.StatusNotFound, reasonNotTokenRoute)
	}
}

// handleToken mints an IMDSv2 session token for the caller's IP.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	// IMDS refuses a token PUT that went through a proxy, so a token cannot
	// be minted on a pod's behalf by something that forwards for it.
	if _, ok := r.Header[forwardedForHeader]; ok {
		s.deny(w, info, http.StatusForbidden, reasonForwardedFor)
		return
	}
	if _, ok := r.Header["Forwarded"]; ok {
		s.deny(w, info, http.StatusForbidden, reasonForwardedFor)
		return
	}
	ttl, ok := parseTTL(r.Header)
	if !ok {
		// The Go SDK treats 400 on the PUT as fatal, as it should be: the
		// client sent no or a bad TTL.
		s.deny(w, info, http.StatusBadRequest, reasonBadTokenTTL)
		return
	}
	tok := s.tokens.mint(info.ip, time.Duration(ttl)*time.Second)
	w.Header().Set(ttlHeader, strconv.Itoa(ttl))
	writeText(w, http.StatusOK, tok)
	s.metrics.tokensIssued.Inc()
}

// identify finds the calling pod and its role. On failure it has answered
// (404 for who-are-you problems, as IMDS does on an instance without a
// profile; 503 while the pod cache is not synced; 500 for internal errors)
// and returns false; the reason is logged, never sent.
func (s *Server) identify(ctx context.Context, w http.ResponseWriter, info *requestInfo) (*k8s.Pod, k8s.Role, bool) {
	pod, role, status, reason, err := s.lookupRole(ctx, info)
	if status != 0 {
		info.err = err
		s.deny(w, info, status, reason)
		return nil, k8s.Role{}, false
	}
	return pod, role, true
}

// lookupRole is identify without answering: it returns the status and
// reason to refuse with, or status 0.
func (s *Server) lookupRole(ctx context.Context, info *requestInfo) (*k8s.Pod, k8s.Role, int, string, error) {
	pod, err := s.pods.FindPod(ctx, info.ip)
	switch {
	case err != nil:
		status, reason := refusal(err, reasonLookupError)
		return nil, k8s.Role{}, status, reason, err
	case pod == nil:
		return nil, k8s.Role{}, http.StatusNotFound, reasonPodNotFound, k8s.ErrPodNotFound
	}
	info.pod = pod
	role, err := s.roles.ResolveRole(ctx, pod)
	switch {
	case err != nil:
		status, reason := refusal(err, reasonResolveError)
		return pod, k8s.Role{}, status, reason, err
	case role.ARN == "" || role.Name == "":
		return pod, k8s.Role{}, http.StatusNotFound, string(k8s.DeniedInvalidRole),
			fmt.Errorf("the role resolver returned a role without ARN or name (%q, %q)", role.ARN, role.Name)
	}
	info.role = role.ARN
	return pod, role, 0, "", nil
}

// refusal maps a pod lookup's or a role resolution's error to the status
// and reason to refuse with: 404 for every "who are you / which role"
// answer, as IMDS on an instance without a profile; 503 while kube2ra
// cannot trust its cache (not synced, or the watch is not current and the
// API server could not confirm), which SDKs retry; 500 with otherReason
// for anything else.
func refusal(err error, otherReason string) (int, string) {
	var denial *k8s.DenialError
	switch {
	case errors.Is(err, k8s.ErrPodNotFound):
		return http.StatusNotFound, reasonPodNotFound
	case errors.Is(err, k8s.ErrAmbiguousIP):
		return http.StatusNotFound, reasonAmbiguousIP
	case errors.Is(err, k8s.ErrNoRole):
		return http.StatusNotFound, reasonNoRole
	case errors.As(err, &denial):
		return http.StatusNotFound, string(denial.Reason)
	case errors.Is(err, k8s.ErrNotSynced):
		return http.StatusServiceUnavailable, reasonNotSynced
	default:
		return http.StatusInternalServerError, otherReason
	}
}

// credentialsList answers iam/security-credentials[-extended][/] with the
// pod's role name (both directories list the same role, as on EC2), or 404
// for a pod without one, which is what makes an SDK fall back from the
// extended directory.
func (s *Server) credentialsList(route string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info := requestInfoFrom(r.Context())
		info.route = route
		_, role, ok := s.identify(r.Context(), w, info)
		if !ok {
			return
		}
		writeText(w, http.StatusOK, role.Name)
	}
}

// serveCredentials answers iam/security-credentials/<name>, and with
// extended iam/security-credentials-extended/<name> (the same document
// with the role's AccountId), only for the pod's own role name. It is the
// hot route (SDKs read it on every refresh and many read it far more
// often), so ServeHTTP calls it before the router, and a credential
// already served is answered from its encoded document.
func (s *Server) serveCredentials(ctx context.Context, w http.ResponseWriter, info *requestInfo, name string, extended bool) {
	info.route = routeCredentials
	if extended {
		info.route = routeExtendedCredentials
	}
	pod, role, ok := s.identify(ctx, w, info)
	if !ok {
		return
	}
	if name != role.Name {
		info.err = fmt.Errorf("asked for role name %q, the pod's role is %q", name, role.Name)
		s.deny(w, info, http.StatusNotFound, reasonRoleNameMismatch)
		return
	}
	creds, err := s.creds.GetCredentials(ctx, pod, role)
	if err != nil {
		status := credentialErrorStatus(err)
		info.err = err
		info.reason = credentialErrorReason(err)
		writeStatus(w, status)
		return
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.SessionToken == "" || creds.Expiration.IsZero() {
		info.err = fmt.Errorf("the credential getter returned incomplete credentials (%s)", creds)
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	var doc *encodedDoc
	var first bool
	if extended {
		doc, first, err = s.extendedDocument(creds, pod, role)
	} else {
		doc, first, err = s.docs.document(creds, pod.UID)
	}
	if err != nil {
		info.err = err
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	info.accessKeyID, info.expiration = creds.AccessKeyID, creds.Expiration
	info.routine = !first
	writeEncoded(w, http.StatusOK, textPlain, doc)
}

// extendedDocument is the extended credential document: the IMDS document
// with the role's AccountId (the resolver parsed it with the ARN). A role
// without one is a resolver bug, answered 500 rather than a document
// without the field the SDK came for.
func (s *Server) extendedDocument(creds credentials.Credentials, pod *k8s.Pod, role k8s.Role) (*encodedDoc, bool, error) {
	account := role.AccountID
	if account == "" {
		return nil, false, fmt.Errorf("role %q came without its account, which the extended credential document must carry", role.ARN)
	}
	return s.extendedDocs.documentWith(creds, pod.UID, func(c credentials.Credentials) ([]byte, error) {
		return encodeIMDSCredentials(c, account)
	})
}

// writeDocument answers 200 with doc as JSON, served as text/plain like
// IMDS does, or 500 (with the reason in the request's log) if it cannot be
// encoded.
func writeDocument(w http.ResponseWriter, info *requestInfo, what string, doc any) {
	body, err := json.Marshal(doc)
	if err != nil {
		info.err = fmt.Errorf("encoding %s failed: %w", what, err)
		writeStatus(w, http.StatusInternalServerError)
		return
	}
	writeBody(w, body)
}

// writeBody answers 200 with body, served as text/plain like IMDS does.
func writeBody(w http.ResponseWriter, body []byte) {
	setTextHeaders(w, len(body))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeEncoded answers status with a cached document of contentType
// (textPlain or applicationJSON), allocating no header values of its own.
func writeEncoded(w http.ResponseWriter, status int, contentType []string, doc *encodedDoc) {
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = doc.contentLength
	w.WriteHeader(status)
	_, _ = w.Write(doc.body)
}

// credentialErrorStatus maps a credential failure to what SDKs handle
// sensibly. Throttled and unavailable are transient: 503, which
// aws-sdk-go-v2's retryer retries with backoff (botocore makes its single
// attempt and moves on either way). Denied and invalid are configuration
// errors that retrying will not fix: 500, so the SDK reports a server-side
// failure rather than "no role" (which 404 would mean). The body never
// carries AWS's message; the log does.
func credentialErrorStatus(err error) int {
	switch credentials.KindOf(err) {
	case credentials.KindThrottled, credentials.KindUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// credentialErrorReason names a credential failure for the log.
func credentialErrorReason(err error) string {
	switch credentials.KindOf(err) {
	case credentials.KindDenied:
		return "CredentialsDenied"
	case credentials.KindThrottled:
		return "CredentialsThrottled"
	case credentials.KindInvalid:
		return "CredentialsInvalid"
	default:
		return "CredentialsUnavailable"
	}
}

// iamInfo is the IMDS iam/info document.
type iamInfo struct {
	Code               string `json:"Code"`
	LastUpdated        string `json:"LastUpdated"`
	InstanceProfileArn string `json:"InstanceProfileArn"`
	InstanceProfileID  string `json:"InstanceProfileId"`
}

// handleIAMInfo answers iam/info for the pod's role: an instance profile
// named like the role, so tools that read the account or partition from it
// (and kube2iam-era scripts) keep working.
func (s *Server) handleIAMInfo(w http.ResponseWriter, r *http.Request) {
	info := requestInfoFrom(r.Context())
	info.route = routeIAMInfo
	_, role, ok := s.identify(r.Context(), w, info)
	if !ok {
		return
	}
	// The credentials are the served role's (the target's when chained).
	parsed, err := arn.ParseRole(role.ServedARN())
	if err != nil {
		err = fmt.Errorf("role ARN %q cannot name an instance profile; fix the role annotation or --base-role-arn: %w", role.ServedARN(), err)
		info.err = err
		s.deny(w, info, http.StatusNotFound, string(k8s.DeniedInvalidRole))
		return
	}
	writeDocument(w, info, "iam/info", iamInfo{
		Code:               "Success",
		LastUpdated:        s.clock.Now().UTC().Format(imdsTimeLayout),
		InstanceProfileArn: parsed.InstanceProfile(),
		InstanceProfileID:  instanceProfileID(parsed.InstanceProfile()),
	})
}

// instanceProfileID is a stable made-up ID in IAM's format (AIPA + 17).
func instanceProfileID(profileARN string) string {
	sum := sha256.Sum256([]byte(profileARN))
	return "AIPA" + base32.StdEncoding.EncodeToString(sum[:])[:17]
}

// handleIAMList answers iam[/] for a pod with a role.
func (s *Server) handleIAMList(w http.ResponseWriter, r *http.Request) {
	info := requestInfoFrom(r.Context())
	info.route = routeIAMList
	if _, _, ok := s.identify(r.Context(), w, info); !ok {
		return
	}
	writeText(w, http.StatusOK, "info\nsecurity-credentials/")
}

// handleMetadata answers every other GET: version listings, the meta-data
// listing (filtered, with iam/ only for a pod with a role), allowlisted
// pass-through, filtered listings of directories above allowlisted paths,
// and 404 for the rest.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	info := requestInfoFrom(r.Context())
	c := info.path
	switch {
	case c.root:
		info.route = routeListing
		writeText(w, http.StatusOK, "latest")
	case len(c.segs) == 0:
		info.route = routeListing
		writeText(w, http.StatusOK, "dynamic\nmeta-data")
	case len(c.segs) == 1 && c.segs[0] == "meta-data":
		info.route = routeListing
		s.serveListing(w, r, info, true)
	case s.allow.allows(c.segs):
		info.route = routePassthrough
		if resp, ok := s.upstreamGet(w, r, info); ok {
			writeText(w, resp.status, string(resp.body))
		}
	case s.allow.isAncestor(c.segs):
		info.route = routeListing
		s.serveListing(w, r, info, false)
	default:
		info.route = routePassthrough
		s.deny(w, info, http.StatusNotFound, reasonPathNotAllowed)
	}
}

// upstreamGet reads the request's path from the real metadata service; on
// failure it answers 502 itself and ok is false.
func (s *Server) upstreamGet(w http.ResponseWriter, r *http.Request, info *requestInfo) (resp metadataResponse, ok bool) {
	resp, err := s.backend.get(r.Context(), info.path.raw)
	if err != nil {
		info.err = err
		writeStatus(w, http.StatusBadGateway)
		return resp, false
	}
	if resp.status == http.StatusUnauthorized {
		// kube2ra's own upstream token was refused twice; the pod's token
		// is fine, so do not tell it otherwise.
		info.err = errors.New("the metadata service refused kube2ra's own token")
		writeStatus(w, http.StatusBadGateway)
		return resp, false
	}
	return resp, true
}

// serveListing fetches a directory listing from the backend and keeps only
// entries that are allowed or lead to something allowed. For meta-data/ it
// adds iam/ when the caller is a pod with a role: the node's own iam/ entry
// is never what a pod sees.
func (s *Server) serveListing(w http.ResponseWriter, r *http.Request, info *requestInfo, metaData bool) {
	c := info.path
	resp, ok := s.upstreamGet(w, r, info)
	if !ok {
		return
	}
	if resp.status != http.StatusOK {
		writeText(w, resp.status, string(resp.body))
		return
	}
	lines := s.allow.filterListing(c.segs, string(resp.body))
	if metaData {
		if _, _, status, _, _ := s.lookupRole(r.Context(), info); status == 0 {
			lines = append(lines, "iam/")
		}
		slices.Sort(lines)
	}
	writeText(w, http.StatusOK, strings.Join(lines, "\n"))
}

// refuse is a handler that refuses every request it gets with status,
// counted under route and reason.
func (s *Server) refuse(route string, status int, reason string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		info := requestInfoFrom(r.Context())
		info.route = route
		s.deny(w, info, status, reason)
	}
}
