package kubeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// mediaMetadataList asks the API server for a list's metadata only
// (meta.k8s.io/v1 PartialObjectMetadataList), in JSON: no spec, no status.
const mediaMetadataList = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

// kindMetadataList is the kind of the answer to mediaMetadataList.
const kindMetadataList = "PartialObjectMetadataList"

// ListVersions lists the identity and resourceVersion of every core/v1
// resource ("pods", "namespaces") in namespace ("" for all or cluster
// scoped): the watch-currency snapshot. It asks for metadata only and
// decodes the answer as it arrives, one item at a time, keeping four
// strings per object: a full list would be read whole into memory (1.5 MB
// for a node's 110 pods in `make bench`) and decoded into whole objects
// only to read those four.
//
// The list is consistent, as any list without a limit is: the options
// must not set Limit, and an answer that is one page of several is an
// error rather than a partial snapshot.
func (c *Client) ListVersions(ctx context.Context, resource, namespace string, o metav1.ListOptions) (*objects.VersionList, error) {
	if o.Limit != 0 || o.Continue != "" {
		return nil, fmt.Errorf("listing %s versions: a snapshot is one consistent list; limit %d and continue %q would make it a page", resource, o.Limit, o.Continue)
	}
	body, err := c.core.Get().NamespaceIfScoped(namespace, namespace != "").Resource(resource).
		VersionedParams(&o, c.params).Timeout(listTimeout(o)).
		SetHeader("Accept", mediaMetadataList).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	l, err := DecodeVersionList(body)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metadata list of %s: %w", resource, err)
	}
	return l, nil
}

// DecodeVersionList reads a PartialObjectMetadataList in JSON from r, one
// item at a time, keeping each item's namespace, name, uid and
// resourceVersion. It refuses another kind, a list that is one page of
// several, an item without a name, uid or resourceVersion, and anything
// that is not one JSON object.
func DecodeVersionList(r io.Reader) (*objects.VersionList, error) {
	d := json.NewDecoder(r)
	if err := expectDelim(d, '{'); err != nil {
		return nil, err
	}
	out := &objects.VersionList{}
	var kind, cont string
	for d.More() {
		key, err := d.Token()
		if err != nil {
			return nil, err
		}
		switch key {
		case "kind":
			if err := d.Decode(&kind); err != nil {
				return nil, fmt.Errorf("kind: %w", err)
			}
		case "metadata":
			var m struct {
				ResourceVersion string `json:"resourceVersion"`
				Continue        string `json:"continue"`
			}
			if err := d.Decode(&m); err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
			out.ResourceVersion, cont = m.ResourceVersion, m.Continue
		case "items":
			if out.Items, err = decodeVersionItems(d); err != nil {
				return nil, err
			}
		default:
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				return nil, fmt.Errorf("%v: %w", key, err)
			}
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("more after the list's end")
	}
	switch {
	case kind != kindMetadataList:
		return nil, fmt.Errorf("the answer is of kind %q, not %s (an API server too old for metadata-only lists?)", kind, kindMetadataList)
	case out.ResourceVersion == "":
		return nil, fmt.Errorf("the list has no resourceVersion")
	case cont != "":
		return nil, fmt.Errorf("the list is one page of several (continue %q); a snapshot must be whole", cont)
	}
	return out, nil
}

// decodeVersionItems reads the items array; null is none (the API server
// writes an empty metadata list's items so).
func decodeVersionItems(d *json.Decoder) ([]objects.ObjectVersion, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("items: %w", err)
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('[') {
		return nil, fmt.Errorf("items: found %v where [ belongs", tok)
	}
	var items []objects.ObjectVersion
	for d.More() {
		var it struct {
			Metadata struct {
				Namespace       string    `json:"namespace"`
				Name            string    `json:"name"`
				UID             types.UID `json:"uid"`
				ResourceVersion string    `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := d.Decode(&it); err != nil {
			return nil, fmt.Errorf("item %d: %w", len(items), err)
		}
		m := it.Metadata
		if m.Name == "" || m.UID == "" || m.ResourceVersion == "" {
			return nil, fmt.Errorf("item %d (%s/%s) lacks a name, uid or resourceVersion", len(items), m.Namespace, m.Name)
		}
		items = append(items, objects.ObjectVersion{Namespace: m.Namespace, Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion})
	}
	if err := expectDelim(d, ']'); err != nil {
		return nil, fmt.Errorf("items: %w", err)
	}
	return items, nil
}

// expectDelim reads the next token and fails unless it is delim.
func expectDelim(d *json.Decoder, delim json.Delim) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	if tok != delim {
		return fmt.Errorf("found %v where %v belongs", tok, delim)
	}
	return nil
}
