package kubeapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/kube2ra/kube2ra/kubeapi"
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// metadataList is a PartialObjectMetadataList as the API server writes it,
// with the fields the snapshot ignores (labels, annotations, managed
// fields, apiVersion) in the way.
const metadataList = `{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"4711"},"items":[` +
	`{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"a","namespace":"ns","uid":"uid-a","resourceVersion":"4700","labels":{"app":"x"},` +
	`"annotations":{"iam.amazonaws.com/role":"r","big":"` + "0123456789" + `"},"managedFields":[{"manager":"kubectl","operation":"Update","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{}}}]}},` +
	`{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"b","namespace":"ns","uid":"uid-b","resourceVersion":"4710"}}]}`

func TestDecodeVersionListKeepsIdentityAndVersionOnly(t *testing.T) {
	got, err := kubeapi.DecodeVersionList(strings.NewReader(metadataList))
	if err != nil {
		t.Fatal(err)
	}
	want := &objects.VersionList{ResourceVersion: "4711", Items: []objects.ObjectVersion{
		{Namespace: "ns", Name: "a", UID: "uid-a", ResourceVersion: "4700"},
		{Namespace: "ns", Name: "b", UID: "uid-b", ResourceVersion: "4710"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeVersionList = %+v; want %+v", got, want)
	}
	// The API server writes an empty metadata list's items as null.
	for _, items := range []string{`[]`, `null`} {
		empty, err := kubeapi.DecodeVersionList(strings.NewReader(`{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"9"},"items":` + items + `}`))
		if err != nil || empty.ResourceVersion != "9" || len(empty.Items) != 0 {
			t.Fatalf("an empty list (items %s) = %+v, %v; want resourceVersion 9 and no items", items, empty, err)
		}
	}
}

// TestDecodeVersionListRefusesWhatIsNotAWholeSnapshot: a snapshot that is
// partial, of another kind, or unreadable would let a stale cache pass
// the currency check, so each is an error that says what was wrong.
func TestDecodeVersionListRefusesWhatIsNotAWholeSnapshot(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"a full list (server ignored the metadata-only ask)", `{"kind":"PodList","metadata":{"resourceVersion":"1"},"items":[]}`, `kind "PodList"`},
		{"no kind", `{"metadata":{"resourceVersion":"1"},"items":[]}`, `kind ""`},
		{"one page of several", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1","continue":"tok"},"items":[]}`, "one page of several"},
		{"no resourceVersion", `{"kind":"PartialObjectMetadataList","metadata":{},"items":[]}`, "no resourceVersion"},
		{"an item without uid", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a","resourceVersion":"1"}}]}`, "item 0 (/a) lacks"},
		{"an item without resourceVersion", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a","uid":"u"}}]}`, "item 0 (/a) lacks"},
		{"items not an array", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":{}}`, "items: found { where [ belongs"},
		{"items a string", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":"x"}`, "items: found x where [ belongs"},
		{"an item of the wrong type", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":7}}]}`, "item 0"},
		{"cut off", metadataList[:len(metadataList)/2], "EOF"},
		{"not an object", `["PartialObjectMetadataList"]`, "where { belongs"},
		{"two documents", `{"kind":"PartialObjectMetadataList","metadata":{"resourceVersion":"1"},"items":[]}{}`, "more after"},
		{"empty", ``, "EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := kubeapi.DecodeVersionList(strings.NewReader(c.body))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("DecodeVersionList(%q) = %+v, %v; want an error containing %q", c.body, got, err, c.want)
			}
		})
	}
}

// TestListVersionsAsksForMetadataOnly: the snapshot list asks for metadata
// only, passes its options, and an error status comes back as the API
// error it is.
func TestListVersionsAsksForMetadataOnly(t *testing.T) {
	type seen struct{ path, accept, selector, rv string }
	requests := make(chan seen, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- seen{r.URL.Path, r.Header.Get("Accept"), r.URL.Query().Get("fieldSelector"), r.URL.Query().Get("resourceVersion")}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/api/v1/namespaces" {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"namespaces is forbidden","reason":"Forbidden","code":403}`)
			return
		}
		fmt.Fprint(w, metadataList)
	}))
	defer srv.Close()
	c, err := kubeapi.New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ListVersions(context.Background(), "pods", "", metav1.ListOptions{FieldSelector: "spec.nodeName=n1"})
	if err != nil || len(got.Items) != 2 || got.ResourceVersion != "4711" {
		t.Fatalf("ListVersions(pods) = %+v, %v; want the two items at 4711", got, err)
	}
	want := seen{"/api/v1/pods", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", "spec.nodeName=n1", ""}
	if s := <-requests; s != want {
		t.Errorf("ListVersions(pods) sent %+v; want %+v (metadata only, the selector, a consistent read)", s, want)
	}
	if _, err := c.ListVersions(context.Background(), "namespaces", "", metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("ListVersions(namespaces) answered 403 = %v; want the Forbidden API error", err)
	}
	if _, err := c.ListVersions(context.Background(), "pods", "", metav1.ListOptions{Limit: 10}); err == nil || !strings.Contains(err.Error(), "one consistent list") {
		t.Errorf("ListVersions with a limit = %v; want a refusal naming the consistent list", err)
	}
}
