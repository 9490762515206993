package iptables

import (
	"context"
	"sync"
)

// Fake is an in-memory Rules for unit tests of the agent: it remembers
// whether the DNAT (nat table) and the guard (filter table) are installed,
// each of which a flush can take away on its own, and counts calls.
type Fake struct {
	// mu guards every field below.
	mu sync.Mutex
	// dnat is whether the nat table's KUBE2RA chain and jump would be installed.
	dnat bool
	// guard is whether the filter table's KUBE2RA-GUARD chain and jumps
	// would be installed.
	guard bool
	// ensureErr, presentErr and removeErr are returned by their verbs when set.
	ensureErr, presentErr, removeErr error
	// calls counts the verbs.
	calls FakeCalls
}

// FakeCalls counts the calls a Fake received.
type FakeCalls struct {
	// Ensure counts EnsureRules calls.
	Ensure int
	// Present counts RulesPresent calls.
	Present int
	// Remove counts Remove calls.
	Remove int
}

var _ Rules = (*Fake)(nil)

// NewFake returns a Fake with no rules installed.
func NewFake() *Fake { return &Fake{} }

// EnsureRules installs the guard and the DNAT; changed is true when either
// was missing.
func (f *Fake) EnsureRules(ctx context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Ensure++
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if f.ensureErr != nil {
		return false, f.ensureErr
	}
	changed := !f.dnat || !f.guard
	f.dnat, f.guard = true, true
	return changed, nil
}

// RulesPresent reports whether both the guard and the DNAT are installed.
func (f *Fake) RulesPresent(ctx context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Present++
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if f.presentErr != nil {
		return false, f.presentErr
	}
	return f.dnat && f.guard, nil
}

// Remove uninstalls the DNAT and then the guard; it succeeds when none are
// installed.
func (f *Fake) Remove(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls.Remove++
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.removeErr != nil {
		return f.removeErr
	}
	f.dnat, f.guard = false, false
	return nil
}

// Flush drops the DNAT behind the agent's back, as `iptables -t nat -F`
// would; the guard stays, so pods are refused rather than leaked.
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dnat = false
}

// FlushFilter drops the guard behind the agent's back, as `iptables -F`
// (the filter table) would; the DNAT stays.
func (f *Fake) FlushFilter() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.guard = false
}

// SetErrors makes the verbs fail with the given errors (nil: succeed).
func (f *Fake) SetErrors(ensure, present, remove error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensureErr, f.presentErr, f.removeErr = ensure, present, remove
}

// Installed reports whether the guard and the DNAT are both installed.
func (f *Fake) Installed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dnat && f.guard
}

// PodsReachMetadata reports whether a pod's request for the metadata
// address would reach the node's real metadata service: neither DNATed
// nor refused by the guard.
func (f *Fake) PodsReachMetadata() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.dnat && !f.guard
}

// Calls returns the call counts so far.
func (f *Fake) Calls() FakeCalls {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}
