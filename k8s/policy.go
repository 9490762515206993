package k8s

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/kube2ra/kube2ra/arn"
)

// PolicyFormat says how the patterns of a namespace's allowed-roles
// annotation are matched against a role ARN.
type PolicyFormat string

const (
	// PolicyGlob matches patterns where "*" stands for any run of characters,
	// "/" and ":" included, so "team/*" allows every role under the path
	// team/, at any depth, and "*" allows every role of the base account.
	// No other character is special: "?" and "[" match themselves.
	// The whole ARN must match: "app" allows app, never app-admin.
	PolicyGlob PolicyFormat = "glob"
	// PolicyRegexp matches patterns as Go regular expressions (RE2),
	// anchored at both ends ("^(?:pattern)$"), so "app" allows app, never
	// app-admin. A leading "^" and trailing "$" written by the user are
	// accepted and change nothing.
	PolicyRegexp PolicyFormat = "regexp"
)

// ParsePolicyFormat checks a --namespace-restriction-format value.
func ParsePolicyFormat(s string) (PolicyFormat, error) {
	switch f := PolicyFormat(strings.ToLower(strings.TrimSpace(s))); f {
	case PolicyGlob, PolicyRegexp:
		return f, nil
	case "":
		return PolicyGlob, nil
	}
	return "", fmt.Errorf("namespace restriction format %q is unknown; use glob or regexp", s)
}

// rolePolicy is a namespace's allowed-roles annotation, parsed and
// compiled once so that matching a request does no parsing.
type rolePolicy struct {
	// patterns are the normalised patterns, for messages.
	patterns []string
	// globs are the compiled glob patterns (PolicyGlob).
	globs []globPattern
	// regexps are the compiled, anchored expressions (PolicyRegexp).
	regexps []*regexp.Regexp
}

// compilePolicy parses an allowed-roles annotation value: a JSON array of
// strings, each a role name, path/name, full ARN or pattern of one. Names
// and paths get base prepended, as roles do. Any error means the policy is
// unusable and every role it would govern is denied.
func compilePolicy(raw string, base arn.Base, format PolicyFormat) (*rolePolicy, error) {
	var patterns []string
	if err := json.Unmarshal([]byte(raw), &patterns); err != nil {
		return nil, fmt.Errorf("the allowed-roles annotation %q is not a JSON array of strings (for example [\"app\",\"team/*\"]): %v", raw, err)
	}
	p := &rolePolicy{}
	for i, pat := range patterns {
		pat = strings.TrimSpace(pat)
		if pat == "" {
			return nil, fmt.Errorf("the allowed-roles annotation %q has an empty pattern at index %d; remove it", raw, i)
		}
		switch format {
		case PolicyRegexp:
			expr, err := normalizeRegexpPattern(pat, base)
			if err != nil {
				return nil, err
			}
			re, err := regexp.Compile("^(?:" + expr + ")$")
			if err != nil {
				return nil, fmt.Errorf("the allowed-roles pattern %q is not a valid regular expression: %v", pat, err)
			}
			p.patterns = append(p.patterns, expr)
			p.regexps = append(p.regexps, re)
		default:
			full, err := normalizePattern(pat, base)
			if err != nil {
				return nil, err
			}
			p.patterns = append(p.patterns, full)
			p.globs = append(p.globs, newGlobPattern(full))
		}
	}
	return p, nil
}

// normalizePattern makes a glob pattern a full ARN pattern the way
// arn.NormalizeRole does for a role.
func normalizePattern(pat string, base arn.Base) (string, error) {
	if strings.HasPrefix(pat, arn.Prefix) {
		return pat, nil
	}
	if base.IsZero() {
		return "", fmt.Errorf("the allowed-roles pattern %q is not a full ARN and no base role ARN is known; set --base-role-arn or write the full ARN", pat)
	}
	return base.String() + strings.TrimPrefix(pat, "/"), nil
}

// normalizeRegexpPattern drops user-written anchors and prefixes the quoted
// base role ARN unless the expression is already a full ARN.
func normalizeRegexpPattern(pat string, base arn.Base) (string, error) {
	pat = strings.TrimPrefix(pat, "^")
	if strings.HasSuffix(pat, "$") && !strings.HasSuffix(pat, `\$`) {
		pat = strings.TrimSuffix(pat, "$")
	}
	if strings.HasPrefix(pat, arn.Prefix) {
		return pat, nil
	}
	if base.IsZero() {
		return "", fmt.Errorf("the allowed-roles pattern %q is not a full ARN and no base role ARN is known; set --base-role-arn or write the full ARN", pat)
	}
	// Group the user's expression so an alternation stays after the base.
	return regexp.QuoteMeta(base.String()) + "(?:" + strings.TrimPrefix(pat, "/") + ")", nil
}

// allows reports whether the full role ARN matches one of the patterns.
func (p *rolePolicy) allows(arn string) bool { return p.match(arn) >= 0 }

// match returns the index of the first pattern the full role ARN matches,
// -1 when none does. Only one of globs and regexps is filled, in pattern order.
func (p *rolePolicy) match(arn string) int {
	for i, g := range p.globs {
		if g.match(arn) {
			return i
		}
	}
	for i, re := range p.regexps {
		if re.MatchString(arn) {
			return i
		}
	}
	return -1
}

// String lists the patterns for messages.
func (p *rolePolicy) String() string {
	return "[" + strings.Join(p.patterns, ", ") + "]"
}

// globPattern is a glob split at its stars.
type globPattern struct {
	// parts are the literal runs between stars; len(parts) = stars + 1.
	parts []string
}

// newGlobPattern splits pat at every "*".
func newGlobPattern(pat string) globPattern {
	return globPattern{parts: strings.Split(pat, "*")}
}

// match reports whether s matches the whole pattern.
func (g globPattern) match(s string) bool {
	if len(g.parts) == 1 {
		return s == g.parts[0]
	}
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	// Greedy leftmost matching of the middle parts is enough for "*"-only globs.
	rest := s[len(first) : len(s)-len(last)]
	for _, mid := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(rest, mid)
		if i < 0 {
			return false
		}
		rest = rest[i+len(mid):]
	}
	return true
}
