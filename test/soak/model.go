package main

import (
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/test/harness"
)

// podModel is a Pod object as the driver last wrote it.
type podModel struct {
	// namespace, name and role annotation ("" for none).
	namespace, name, role string
	// ip is status.podIP.
	ip netip.Addr
}

// model is the API state the driver wrote: pods and namespace policies. It
// computes each IP's entitlement the way the design says kube2ra must: the
// one live pod with the IP, its role annotation, its namespace's
// allowed-roles (glob, whole ARN, names get the base ARN), deny when
// unparsable or absent.
type model struct {
	// pods are the live Pod objects by namespace/name.
	pods map[string]podModel
	// policies are the allowed-roles annotations by namespace ("" for none).
	policies map[string]string
	// sessions says whether sessions are named after pods (and so checkable).
	sessions bool
}

func newModel(sessions bool) *model {
	return &model{pods: map[string]podModel{}, policies: map[string]string{}, sessions: sessions}
}

// entitled is what ip may receive in this state.
func (m *model) entitled(ip netip.Addr) entitlement {
	var owner *podModel
	for _, p := range m.pods {
		if p.ip != ip {
			continue
		}
		if owner != nil {
			return entitlement{} // several live pods: nobody gets anything
		}
		p := p
		owner = &p
	}
	if owner == nil || owner.role == "" {
		return entitlement{}
	}
	arn := harness.RoleARN(owner.role)
	if !policyAllows(m.policies[owner.namespace], arn) {
		return entitlement{}
	}
	e := entitlement{role: arn}
	if m.sessions {
		e.session = credentials.SessionName(owner.namespace, owner.name)
	}
	return e
}

// ipsIn are the IPs of live pods in namespace.
func (m *model) ipsIn(namespace string) []netip.Addr {
	var out []netip.Addr
	for _, p := range m.pods {
		if p.namespace == namespace {
			out = append(out, p.ip)
		}
	}
	return out
}

// policyAllows evaluates an allowed-roles annotation for a role ARN.
func policyAllows(raw, arn string) bool {
	if raw == "" {
		return false
	}
	var patterns []string
	if err := json.Unmarshal([]byte(raw), &patterns); err != nil {
		return false
	}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			return false // an empty pattern makes the whole policy unusable
		}
	}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, "arn:") {
			p = "arn:aws:iam::" + harness.Account + ":role/" + p
		}
		if globMatch(p, arn) {
			return true
		}
	}
	return false
}

// globMatch matches s against pattern where "*" is any run of characters
// (slashes and colons included) and nothing else is special.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}
