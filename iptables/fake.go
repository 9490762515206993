package iptables

import (
	"context"
	"sync"
)

// Fake is an in-memory Rules for unit tests of the agent: it remembers
// whether the rules are installed and counts calls.
type Fake struct {
	// mu guards every field below.
	mu sync.Mutex
	// present is whether the rules would be installed.
	present bool
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

// EnsureRules installs the rules; changed is true when they were missing.
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
	changed := !f.present
	f.present = true
	return changed, nil
}

// RulesPresent reports whether the rules are installed.
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
	return f.present, nil
}

// Remove uninstalls the rules; it succeeds when none are installed.
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
	f.present = false
	return nil
}

// Flush drops the rules behind the agent's back, as `iptables -t nat -F` would.
func (f *Fake) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.present = false
}

// SetErrors makes the verbs fail with the given errors (nil: succeed).
func (f *Fake) SetErrors(ensure, present, remove error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensureErr, f.presentErr, f.removeErr = ensure, present, remove
}

// Installed reports whether the rules are installed.
func (f *Fake) Installed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.present
}

// Calls returns the call counts so far.
func (f *Fake) Calls() FakeCalls {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}
