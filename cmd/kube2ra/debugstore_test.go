package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kube2ra/kube2ra/arn"
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
)

// trackedMap is a credential cache's tracked entries, by pod UID.
type trackedMap map[string]credentials.EntryState

func (m trackedMap) TrackedEntry(uid string) (credentials.EntryState, bool) {
	st, ok := m[uid]
	return st, ok
}

// TestDebugStoreAddsEachOwnersCacheEntry: /debug/store keeps k8s's fields
// at the top level (what readers of the page already parse) and adds the
// owner's cache entry, found by its UID, under "credentials".
func TestDebugStoreAddsEachOwnersCacheEntry(t *testing.T) {
	tracked := testPod("shop", "web-1", "10.1.0.5", role("web"))
	untracked := testPod("shop", "web-2", "10.1.0.6", role("web"))
	cfg := NewConfig()
	cfg.Node, cfg.HostIP, cfg.BaseRoleARN = tNode, tHostIP, tBase
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base, _ := arn.ParseBase(tBase)
	view, err := watchNode(ctx, kubeapitest.FromClientset(fake.NewClientset(testNamespace("shop", `["web"]`), tracked, untracked)), cfg, tNode, base)
	if err != nil {
		t.Fatal(err)
	}
	defer view.stop()
	cache := trackedMap{string(tracked.UID): {RoleARN: tBase + "web", Cached: true}}
	doc, err := json.Marshal(debugStore(view.watcher, view.resolver, cache))
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2: %s", len(got), doc)
	}
	for _, e := range got {
		if e["verdict"] != "owned" || e["role"] != tBase+"web" {
			t.Errorf("k8s fields not at the top level: %v", e)
		}
		creds, has := e["credentials"].(map[string]any)
		switch e["ip"] {
		case "10.1.0.5":
			if !has || creds["cached"] != true || creds["roleArn"] != tBase+"web" {
				t.Errorf("tracked owner's entry: %v", e)
			}
		default:
			if has {
				t.Errorf("untracked owner got a cache entry: %v", e)
			}
		}
	}
}
