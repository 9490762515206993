package main

import (
	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
)

// debugEntry is one line of /debug/store: an IP, the pod owning it, its
// role and, for a tracked owner, its credential cache entry (no secrets).
type debugEntry struct {
	k8s.DebugEntry
	// Credentials is the owner's cache entry; nil when the pod is not
	// tracked (no role, or not announced yet).
	Credentials *credentials.EntryState `json:"credentials,omitempty"`
}

// trackedEntries is what /debug/store reads of the credential cache;
// *credentials.CredentialCache has it.
type trackedEntries interface {
	TrackedEntry(podUID string) (credentials.EntryState, bool)
}

var _ trackedEntries = (*credentials.CredentialCache)(nil)

// debugStore is /debug/store: k8s.DebugStore with each owner's cache entry,
// found by the pod UID the role notifier tracks it under (PodRoleChanged).
func debugStore(w *k8s.Watcher, r *k8s.RoleResolver, cache trackedEntries) []debugEntry {
	entries := k8s.DebugStore(w, r)
	out := make([]debugEntry, len(entries))
	for i, e := range entries {
		out[i].DebugEntry = e
		if e.Owner == nil {
			continue
		}
		if st, ok := cache.TrackedEntry(string(e.Owner.UID)); ok {
			out[i].Credentials = &st
		}
	}
	return out
}
