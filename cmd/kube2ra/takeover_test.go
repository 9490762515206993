package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/handover"
)

// TestReadyIsFalseWhileASuccessorWarmsUp: the kubelet probes the new pod
// on the shared port, which the old agent answers until the handover; if
// it answered ready, the DaemonSet controller would delete it before the
// new agent serves. Once the successor gives up, the old agent is ready
// again.
func TestReadyIsFalseWhileASuccessorWarmsUp(t *testing.T) {
	a, _ := readyAgent(t)
	dir := t.TempDir()
	offer, err := handover.Open(handover.OfferOptions{Dir: dir, Listeners: func() []net.Listener { return nil }, Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	a.offer = offer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = offer.Serve(ctx) }()
	if err := a.ready(ctx); err != nil {
		t.Fatalf("ready() = %v before any successor", err)
	}
	claim, err := handover.Dial(ctx, dir, "v2")
	if err != nil || claim == nil {
		t.Fatalf("Dial: %v %v", claim, err)
	}
	err = a.ready(ctx)
	if err == nil || !strings.Contains(err.Error(), "is taking over this node's sockets") || !strings.Contains(err.Error(), "version v2") {
		t.Fatalf("ready() = %v while a successor warms up, want it to name the successor", err)
	}
	_ = claim.Close()
	deadline := time.Now().Add(10 * time.Second)
	for a.ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("ready() = %v after the successor left", a.ready(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
