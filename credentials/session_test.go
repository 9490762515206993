package credentials

import (
	"fmt"
	"regexp"
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
