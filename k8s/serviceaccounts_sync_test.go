package k8s

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kube2ra/kube2ra/kubeapi/kubeapitest"
	"github.com/kube2ra/kube2ra/test/syncbuf"
)

// TestServiceAccountSyncSaysWhatItWaitsFor: when the ServiceAccounts cannot
// be listed (RBAC without serviceaccounts), the wait is not silent: every
// interval a warning names what is awaited and the permission to check.
func TestServiceAccountSyncSaysWhatItWaitsFor(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "serviceaccounts", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts"}, "", errors.New("RBAC"))
	})
	accounts, err := NewServiceAccounts(kubeapitest.FromClientset(client), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	accounts.Start(ctx)
	defer accounts.Shutdown()

	var logs syncbuf.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	clk := clocktesting.NewFakeClock(time.Now())
	done := make(chan error, 1)
	go func() { done <- accounts.WaitForSync(ctx, SyncLog{Logger: l, Interval: 10 * time.Second, Clock: clk}) }()

	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	if strings.Contains(logs.String(), "still waiting") {
		t.Fatalf("warned before the interval:\n%s", logs.String())
	}
	for i := 1; i <= 2; i++ {
		clk.Step(10 * time.Second)
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(logs.String(), "still waiting for the API server to list ServiceAccounts") < i {
			if time.Now().After(deadline) {
				t.Fatalf("no warning %d after %d intervals:\n%s", i, i, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if out := logs.String(); !strings.Contains(out, "list and watch serviceaccounts") || !strings.Contains(out, "20s so far") {
		t.Errorf("the warning does not name the permission and the time waited:\n%s", out)
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrNotSynced) {
		t.Errorf("WaitForSync after cancel = %v, want ErrNotSynced", err)
	}
}
