package credentials

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// stsSessionNameRE is RoleSessionName's rule as STS states it.
var stsSessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestSessionName(t *testing.T) {
	long := strings.Repeat("p", 253)
	for _, tc := range []struct {
		name      string
		namespace string
		pod       string
		want      string // exact result, when it is predictable
		wantStart string // else the prefix kept
	}{
		{name: "a short valid name is namespace.pod unchanged", namespace: "team-a", pod: "web-7f9c-x2x", want: "team-a.web-7f9c-x2x"},
		{name: "exactly 64 characters are kept", namespace: "ns", pod: strings.Repeat("a", 61), want: "ns." + strings.Repeat("a", 61)},
		{name: "65 characters are cut and hashed", namespace: "ns", pod: strings.Repeat("a", 62), wantStart: "ns." + strings.Repeat("a", 48) + "_"},
		{name: "a 253-character pod name is cut and hashed", namespace: "kube-system", pod: long, wantStart: "kube-system." + strings.Repeat("p", 39) + "_"},
		{name: "characters STS refuses become dashes and the name is hashed", namespace: "ns", pod: "a b/c", wantStart: "ns.a-b-c_"},
		{name: "non-ASCII letters are refused by STS too", namespace: "ns", pod: "café", wantStart: "ns.caf-_"},
		{name: "an underscore marks hashed names, so it forces a hash", namespace: "ns", pod: "a_b", wantStart: "ns.a_b_"},
		{name: "a dot in the namespace could read like another pod, so it forces a hash", namespace: "a.b", pod: "c", wantStart: "a.b.c_"},
		{name: "empty namespace and pod still give a valid name", namespace: "", pod: "", wantStart: "._"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SessionName(tc.namespace, tc.pod)
			if !stsSessionNameRE.MatchString(got) {
				t.Fatalf("SessionName(%q, %q) = %q (%d chars) breaks STS's rule", tc.namespace, tc.pod, got, len(got))
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.wantStart != "" {
				if !strings.HasPrefix(got, tc.wantStart) || len(got) != len(tc.wantStart)+sessionHashLen {
					t.Errorf("got %q, want %q followed by a %d-digit hash", got, tc.wantStart, sessionHashLen)
				}
			}
			if again := SessionName(tc.namespace, tc.pod); again != got {
				t.Errorf("not stable: %q then %q", got, again)
			}
		})
	}
}

func TestSessionNamesOfDistinctPodsNeverCollide(t *testing.T) {
	seen := map[string]string{}
	add := func(ns, pod string) {
		name := SessionName(ns, pod)
		id := ns + "/" + pod
		if other, ok := seen[name]; ok && other != id {
			t.Fatalf("%s and %s share session name %q", other, id, name)
		}
		seen[name] = id
	}
	prefix := strings.Repeat("x", 70)
	for i := 0; i < 2000; i++ {
		add("ns", fmt.Sprintf("%s-%d", prefix, i)) // identical after the cut
		add("ns", fmt.Sprintf("web-%d", i))
		add(fmt.Sprintf("ns-%d", i%7), fmt.Sprintf("web-%d", i))
	}
	// Inputs that sanitise alike, or that an unhashed name could imitate.
	add("ns", "a b")
	add("ns", "a/b")
	add("ns", "a-b")
	add("a.b", "c")
	add("a", "b.c")
	add("ns", "web_"+SessionName("ns", prefix+"-1")[len("ns."):])
}

func TestSessionTags(t *testing.T) {
	t.Run("all four keys, sorted, values as given", func(t *testing.T) {
		got := SessionTags("team-a", "web-0", "web", "node-1")
		want := []Tag{{TagNamespace, "team-a"}, {TagNode, "node-1"}, {TagPodName, "web-0"}, {TagServiceAccount, "web"}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("empty values are left out", func(t *testing.T) {
		got := SessionTags("team-a", "web-0", "", "")
		if len(got) != 2 || got[0].Key != TagNamespace || got[1].Key != TagPodName {
			t.Errorf("got %v", got)
		}
	})
	t.Run("characters STS refuses become dashes; letters of any script stay", func(t *testing.T) {
		got := SessionTags("ns", "pöd#1*", "", "")
		if got[1].Value != "pöd-1-" {
			t.Errorf("pod tag %q", got[1].Value)
		}
	})
	t.Run("values are cut to 256 characters", func(t *testing.T) {
		got := SessionTags("ns", strings.Repeat("é", 300), "", "")
		if n := utf8.RuneCountInString(got[1].Value); n != maxTagValueLen {
			t.Errorf("%d characters", n)
		}
	})
	tagRE := regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	for _, tg := range SessionTags("a\x00b", "c\xffd", "e\tf", "g|h") {
		if !tagRE.MatchString(tg.Value) {
			t.Errorf("tag %s=%q breaks STS's rule", tg.Key, tg.Value)
		}
	}
}

func TestRequestKeyIsInjective(t *testing.T) {
	reqs := []Request{
		{RoleARN: "r", ExternalID: "e", SessionName: "s"},
		{RoleARN: "r", ExternalID: "e\x00s", SessionName: ""},
		{RoleARN: "r", ExternalID: "", SessionName: "e\x00s"},
		{RoleARN: "r\x00e", ExternalID: "s"},
		{RoleARN: "r", ExternalID: "e", SessionName: "s", Tags: []Tag{{"k", "v"}}},
		{RoleARN: "r", ExternalID: "e", SessionName: "s", Tags: []Tag{{"k=v", ""}}},
		{RoleARN: "r", ExternalID: "e", SessionName: "s", Tags: []Tag{{"k", ""}, {"v", ""}}},
		{RoleARN: "r", ExternalID: "e", SessionName: "s1:k1:v"},
		{RoleARN: "r", ExternalID: "e", SessionName: "s", Tags: []Tag{{"", "v"}}},
	}
	seen := map[string]int{}
	for i, r := range reqs {
		k := r.Key()
		if j, ok := seen[k]; ok {
			t.Errorf("requests %d and %d share key %q", j, i, k)
		}
		seen[k] = i
		if r.Key() != k {
			t.Errorf("key of request %d not stable", i)
		}
	}
}

func TestNodeSessionName(t *testing.T) {
	for _, tc := range []struct {
		name      string
		node      string
		want      string // exact result, when it is predictable
		wantStart string // else the prefix kept
	}{
		{name: "a DNS node name is kept as it is", node: "ip-10-0-1-2.eu-west-1.compute.internal", want: "ip-10-0-1-2.eu-west-1.compute.internal"},
		{name: "a 64-character node name is kept", node: strings.Repeat("n", 64), want: strings.Repeat("n", 64)},
		{name: "a 253-character node name is cut and hashed", node: strings.Repeat("n", 253), wantStart: strings.Repeat("n", 51) + "_"},
		{name: "a one-character node name is too short for STS and is hashed", node: "a", wantStart: "a_"},
		{name: "characters STS refuses become dashes and the name is hashed", node: "node 1", wantStart: "node-1_"},
		{name: "an underscore marks hashed names, so it forces a hash", node: "a_b", wantStart: "a_b_"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NodeSessionName(tc.node)
			if !stsSessionNameRE.MatchString(got) {
				t.Fatalf("NodeSessionName(%q) = %q (%d chars) breaks the RoleSessionName rule", tc.node, got, len(got))
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if tc.wantStart != "" && (!strings.HasPrefix(got, tc.wantStart) || len(got) != len(tc.wantStart)+sessionHashLen) {
				t.Errorf("got %q, want %q followed by a %d-digit hash", got, tc.wantStart, sessionHashLen)
			}
		})
	}
	if NodeSessionName(strings.Repeat("n", 100)+"1") == NodeSessionName(strings.Repeat("n", 100)+"2") {
		t.Error("two long node names that agree after the cut share a session name")
	}
}

// TestSessionNamingDecidesWhichPodsShareASession: the session name is part
// of the cache key, so node naming gives the pods of a node one name (one
// session per role) and pod naming each pod its own.
func TestSessionNamingDecidesWhichPodsShareASession(t *testing.T) {
	for _, tc := range []struct {
		naming    SessionNaming
		wantShare bool
		wantName  string // of team-a/web-0 on node-1
	}{
		{naming: SessionNamingNode, wantShare: true, wantName: "node-1"},
		{naming: SessionNamingPod, wantShare: false, wantName: "team-a.web-0"},
		{naming: SessionNamingNone, wantShare: true, wantName: ""},
	} {
		t.Run(string(tc.naming), func(t *testing.T) {
			a := Request{RoleARN: appRoleARN, SessionName: tc.naming.SessionNameFor("team-a", "web-0", "node-1")}
			b := Request{RoleARN: appRoleARN, SessionName: tc.naming.SessionNameFor("team-b", "api-1", "node-1")}
			if a.SessionName != tc.wantName {
				t.Errorf("session name %q, want %q", a.SessionName, tc.wantName)
			}
			if share := a.Key() == b.Key(); share != tc.wantShare {
				t.Errorf("two pods of one node share a cache key: %t, want %t", share, tc.wantShare)
			}
			other := Request{RoleARN: appRoleARN, SessionName: tc.naming.SessionNameFor("team-a", "web-0", "node-2")}
			if tc.naming == SessionNamingNode && other.Key() == a.Key() {
				t.Error("pods on two nodes share a session name")
			}
		})
	}
}

func TestParseSessionNaming(t *testing.T) {
	for _, s := range []string{"node", "pod", "none"} {
		if n, err := ParseSessionNaming(s); err != nil || string(n) != s {
			t.Errorf("ParseSessionNaming(%q) = %q, %v", s, n, err)
		}
	}
	if _, err := ParseSessionNaming("Pod"); err == nil || !strings.Contains(err.Error(), `"Pod"`) || !strings.Contains(err.Error(), "node") {
		t.Errorf("ParseSessionNaming(%q) error %v does not name the input and the choices", "Pod", err)
	}
}

func TestTagModes(t *testing.T) {
	p := PodTags{Namespace: "team-a", Pod: "web-0", PodUID: "4c1e9f4e-0000-4000-8000-000000000001", ServiceAccount: "web", Node: "node-1",
		ClusterName: "prod", ClusterARN: "arn:aws:eks:eu-central-1:111122223333:cluster/prod"}
	keys := func(tags []Tag) []string {
		var out []string
		for _, tg := range tags {
			out = append(out, tg.Key+"="+tg.Value)
		}
		return out
	}
	for _, tc := range []struct {
		mode TagMode
		p    PodTags
		want []string
	}{
		{TagsOff, p, nil},
		{TagsKube2ra, p, []string{"kubernetes-namespace=team-a", "kubernetes-node=node-1", "kubernetes-pod-name=web-0", "kubernetes-service-account=web"}},
		// EKS's six keys with EKS's meanings, beside kube2ra's node tag.
		{TagsEKS, p, []string{"eks-cluster-arn=arn:aws:eks:eu-central-1:111122223333:cluster/prod", "eks-cluster-name=prod",
			"kubernetes-namespace=team-a", "kubernetes-node=node-1", "kubernetes-pod-name=web-0", "kubernetes-pod-uid=4c1e9f4e-0000-4000-8000-000000000001", "kubernetes-service-account=web"}},
		// No cluster ARN off EKS: the tag is absent, never empty.
		{TagsEKS, PodTags{Namespace: "n", Pod: "p", PodUID: "u", ServiceAccount: "s", ClusterName: "c"}, []string{"eks-cluster-name=c", "kubernetes-namespace=n", "kubernetes-pod-name=p", "kubernetes-pod-uid=u", "kubernetes-service-account=s"}},
	} {
		if got := keys(tc.mode.Tags(tc.p)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.mode, got, tc.want)
		}
	}
	for in, want := range map[string]TagMode{"": TagsOff, "false": TagsOff, "off": TagsOff, "true": TagsKube2ra, "kube2ra": TagsKube2ra, "EKS": TagsEKS} {
		if got, err := ParseTagMode(in); err != nil || got != want {
			t.Errorf("ParseTagMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseTagMode("all"); err == nil || !strings.Contains(err.Error(), "eks") {
		t.Errorf("ParseTagMode(all) = %v", err)
	}
}

func TestTargetExternalIDIsEKSs(t *testing.T) {
	// The format of EKS Pod Identity's target-role external ID, from the
	// EKS User Guide ("Access AWS Resources using EKS Pod Identity Target
	// IAM Roles"): region/account-id/cluster-name/namespace/service-account-name.
	if got := TargetExternalID("us-east-1", "111122223333", "example-cluster", "ns", "sa"); got != "us-east-1/111122223333/example-cluster/ns/sa" {
		t.Errorf("TargetExternalID = %q", got)
	}
}
