package proxy

import (
	"net/http"
	"strings"
)

// maxPathLen bounds the request target. IMDS paths are short; the longest an
// SDK sends (a MAC-keyed network path) is under 100 bytes.
const maxPathLen = 256

// Gate refusal reasons, used as the denials_total reason and in the log.
const (
	reasonMalformedPath  = "MalformedPath"
	reasonNonCanonical   = "NonCanonicalPath"
	reasonUnknownVersion = "UnknownVersion"
)

// canonicalPath is a request target that passed the gate.
type canonicalPath struct {
	// raw is the validated target exactly as the client sent it; it is what
	// the upstream receives for a pass-through.
	raw string
	// root is true for "/" (the list of versions).
	root bool
	// version is "latest" or a YYYY-MM-DD date.
	version string
	// segs are the segments after the version, without a trailing empty one.
	segs []string
}

// routePath is the path the router matches: the target without its
// trailing slash. IMDS treats "x" and "x/" alike (botocore asks for
// placement/availability-zone/), so every route does too.
func (c canonicalPath) routePath() string {
	if c.root || len(c.raw) <= 1 {
		return "/"
	}
	return strings.TrimSuffix(c.raw, "/")
}

// The two IMDS credential directories under meta-data/iam/. Newer SDKs
// (Java v2, Ruby, PHP) read the extended one first, for its
// AccountId, and fall back to the other on 404.
const (
	credentialsDir         = "security-credentials"
	extendedCredentialsDir = "security-credentials-extended"
)

// credentialName is <name> when the path is
// <version>/meta-data/iam/security-credentials[-extended]/<name>[/], and
// whether it is the extended directory.
func (c canonicalPath) credentialName() (name string, extended, ok bool) {
	if len(c.segs) != 4 || c.segs[0] != "meta-data" || c.segs[1] != "iam" || c.segs[3] == "" {
		return "", false, false
	}
	switch c.segs[2] {
	case credentialsDir:
		return c.segs[3], false, true
	case extendedCredentialsDir:
		return c.segs[3], true, true
	}
	return "", false, false
}

// tokenPath is the one target that mints IMDSv2 tokens, byte for byte.
const tokenPath = "/latest/api/token"

// underAPI reports whether the path is below api/ in any letter case: the
// token route's directory, which is never routed or passed through.
func (c canonicalPath) underAPI() bool {
	return len(c.segs) > 0 && strings.EqualFold(c.segs[0], "api")
}

// rel is the version-relative path without a trailing slash ("" for the version root).
func (c canonicalPath) rel() string { return strings.Join(c.segs, "/") }

// pathByte says which bytes may appear in a canonical IMDS path: letters,
// digits, "-", "_", ".", ":" (MAC addresses), "+", "=", ",", "@" (IAM role
// names use them, and SDKs put the role name in the path as it is) and "/".
// None of those has another spelling or a meaning in a path. Everything
// else, notably "%", "\", ";", "?", "#", spaces, controls and non-ASCII,
// is refused, so there is never an encoded or alternative spelling of a path.
var pathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_.:+=,@/" {
		t[c] = true
	}
	return t
}()

// checkPath decides from the raw request target whether a request may reach
// the router at all. It returns the parsed path, or a status (400 for bytes
// that never belong in an IMDS path, 404 for well-formed but non-canonical
// structure) and a reason. It reads only the raw target: the cleaned and
// decoded r.URL.Path is exactly what an attacker controls the difference of.
func checkPath(target string) (canonicalPath, int, string) {
	return checkPathInto(target, nil)
}

// checkPathInto is checkPath splitting the segments into segs' array while
// they fit (ServeHTTP passes a buffer inside the request's info).
func checkPathInto(target string, segs []string) (canonicalPath, int, string) {
	if target == "" || len(target) > maxPathLen || target[0] != '/' {
		// Empty, overlong, absolute-form ("http://...") or "*".
		return canonicalPath{}, http.StatusBadRequest, reasonMalformedPath
	}
	for i := 0; i < len(target); i++ {
		if !pathByte[target[i]] {
			return canonicalPath{}, http.StatusBadRequest, reasonMalformedPath
		}
	}
	c := canonicalPath{raw: target}
	if target == "/" {
		c.root = true
		return c, 0, ""
	}
	rest := strings.TrimSuffix(target[1:], "/")
	if rest == "" {
		return canonicalPath{}, http.StatusNotFound, reasonNonCanonical // "//"
	}
	version, after, hasMore := strings.Cut(rest, "/")
	if !validVersion(version) {
		if version == "" || version[0] == '.' {
			return canonicalPath{}, http.StatusNotFound, reasonNonCanonical
		}
		return canonicalPath{}, http.StatusNotFound, reasonUnknownVersion
	}
	c.version = version
	if !hasMore {
		return c, 0, ""
	}
	c.segs = segs[:0]
	for s := range strings.SplitSeq(after, "/") {
		c.segs = append(c.segs, s)
	}
	for _, s := range c.segs {
		// Empty ("//"), "." and ".." segments, and anything else starting
		// with a dot ("..0", ".x"): no IMDS name starts with one, and a
		// server that trims or decodes oddly must never see something
		// that resembles a dot segment.
		if s == "" || s[0] == '.' {
			return canonicalPath{}, http.StatusNotFound, reasonNonCanonical
		}
	}
	return c, 0, ""
}

// validVersion accepts "latest" and dated versions such as 2021-07-15.
func validVersion(v string) bool {
	if v == "latest" {
		return true
	}
	if len(v) != len("2006-01-02") {
		return false
	}
	for i := 0; i < len(v); i++ {
		switch i {
		case 4, 7:
			if v[i] != '-' {
				return false
			}
		default:
			if v[i] < '0' || v[i] > '9' {
				return false
			}
		}
	}
	month := (v[5]-'0')*10 + v[6] - '0'
	day := (v[8]-'0')*10 + v[9] - '0'
	return month >= 1 && month <= 12 && day >= 1 && day <= 31
}
