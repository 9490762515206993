package k8s

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// graceTracker is a tracker over an empty store whose snapshot lists are
// counted; with hold set, a list waits until release is closed.
func graceTracker(t *testing.T) (tr *streamTracker, clk *clocktesting.FakeClock, lists *atomic.Int64, hold *atomic.Bool, release chan struct{}) {
	t.Helper()
	clk = clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	log, _ := logtest.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	lists, hold, release = &atomic.Int64{}, &atomic.Bool{}, make(chan struct{})
	list := func(context.Context) (*objects.VersionList, error) {
		lists.Add(1)
		if hold.Load() {
			<-release
		}
		return &objects.VersionList{ResourceVersion: "5"}, nil
	}
	tr = newStreamTracker("pods", log, clk, list, func() []any { return nil }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr.streamOpened(ctx)
	waitFor(t, "the first stream is current", tr.isCurrent)
	return tr, clk, lists, hold, release
}

func TestCleanStreamEndReopenedWithinTheGraceStaysCurrent(t *testing.T) {
	tr, clk, lists, _, _ := graceTracker(t)
	before := lists.Load()
	gen := tr.gen
	tr.streamClosed(gen, "the watch stream ended", true)
	if !tr.isCurrent() {
		t.Fatal("not current right after a clean end; the grace should hold")
	}
	clk.Step(reopenGrace / 2)
	tr.streamOpened(context.Background())
	clk.Step(2 * reopenGrace) // the first stream's grace expires: it must not count
	time.Sleep(20 * time.Millisecond)
	if !tr.isCurrent() {
		t.Fatalf("not current after a reopen within the grace: %s", tr.notCurrentReason())
	}
	if n := lists.Load() - before; n != 0 {
		t.Errorf("%d snapshot lists for a resumed stream; want 0", n)
	}
}

func TestCleanStreamEndWithoutReopenEndsCurrencyAfterTheGrace(t *testing.T) {
	tr, clk, _, hold, release := graceTracker(t)
	tr.streamClosed(tr.gen, "the watch stream ended", true)
	waitFor(t, "currency ends once the grace has passed", func() bool {
		clk.Step(reopenGrace)
		return !tr.isCurrent()
	})
	// The next stream is checked against a snapshot before it is trusted.
	hold.Store(true)
	tr.streamOpened(context.Background())
	time.Sleep(20 * time.Millisecond)
	if tr.isCurrent() {
		t.Fatal("a stream opened after the grace is trusted before its snapshot")
	}
	close(release)
	waitFor(t, "current after the snapshot", tr.isCurrent)
}

func TestFailedOrStoppedStreamEndsCurrencyAtOnce(t *testing.T) {
	for _, why := range []string{"the watch stream failed: too old", "the watch stream was stopped"} {
		tr, _, _, _, _ := graceTracker(t)
		tr.streamClosed(tr.gen, why, false)
		if tr.current.Load() {
			t.Errorf("%q: still current; a stream that did not end cleanly must end currency at once", why)
		}
	}
}

func TestLiveChecksUseTheirOwnClient(t *testing.T) {
	log, _ := logtest.NewNullLogger()
	informers, checks := kubeapitest.FromClientset(fake.NewClientset()), kubeapitest.FromClientset(fake.NewClientset())
	w, err := NewWatcher(informers, WatcherOptions{NodeName: "node-a", Logger: log, VerifyClient: checks})
	if err != nil {
		t.Fatal(err)
	}
	if w.client != Client(checks) {
		t.Error("live checks do not use WatcherOptions.VerifyClient")
	}
	w, err = NewWatcher(informers, WatcherOptions{NodeName: "node-a", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if w.client != Client(informers) {
		t.Error("without VerifyClient, live checks do not use the informers' client")
	}
}

// TestFailedSnapshotSaysWhyInTheReason: while the snapshot list fails, the
// reason the cache is not current (quoted by lookups' errors) names the
// failure, not only that a snapshot is being taken.
func TestFailedSnapshotSaysWhyInTheReason(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1700000000, 0))
	log, _ := logtest.NewNullLogger()
	list := func(context.Context) (*objects.VersionList, error) {
		return nil, errors.New(`the answer is of kind "PodList", not PartialObjectMetadataList`)
	}
	tr := newStreamTracker("pods", log, clk, list, func() []any { return nil }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr.streamOpened(ctx)
	waitFor(t, "the reason names the failed snapshot", func() bool {
		return strings.Contains(tr.notCurrentReason(), `snapshot list failed (retrying): the answer is of kind "PodList"`)
	})
	if tr.isCurrent() {
		t.Fatal("current without a snapshot")
	}
}
