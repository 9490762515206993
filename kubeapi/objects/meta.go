package objects

import (
	"encoding/json"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Meta is the metadata the agent keeps of the kinds it caches for the
// whole cluster, namespaces and ServiceAccounts: every agent holds every
// one of them, so each byte here is paid once per object per node.
// metav1.ObjectMeta is 232 bytes of mostly empty fields; Meta is 88, and
// its annotations are a list, not a map (see Annotations).
//
// Meta implements metav1.Object, as client-go's informers and reflector
// need; as that interface allows, the fields Meta does not have read as
// their zero values and setting them does nothing.
type Meta struct {
	// Name is the object's name.
	Name string `json:"name,omitempty"`
	// Namespace is the object's namespace, empty for namespaces.
	Namespace string `json:"namespace,omitempty"`
	// UID tells this object from an earlier one of the same name.
	UID types.UID `json:"uid,omitempty"`
	// ResourceVersion is the object's version.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Annotations hold the agent's settings (role policy, roles).
	Annotations Annotations `json:"annotations,omitempty"`
}

// Annotations are an object's annotations as a list of distinct keys
// (in no meaningful order; Get finds a key by looking at each). The
// agent keeps one to three of them per object, and a Go map allocates a
// group of eight slots even for one entry (about 300 bytes): on 2,000
// namespaces that was the largest part of what each one cost every
// agent. A list of one costs 32 bytes. It encodes and decodes as the
// API's JSON object.
type Annotations []Annotation

// Annotation is one key and its value.
type Annotation struct {
	Key, Value string
}

// Get returns key's value; ok is false when the key is absent.
func (a Annotations) Get(key string) (value string, ok bool) {
	for _, e := range a {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// Map returns the annotations as a new map, nil when there are none.
func (a Annotations) Map() map[string]string {
	if len(a) == 0 {
		return nil
	}
	m := make(map[string]string, len(a))
	for _, e := range a {
		m[e.Key] = e.Value
	}
	return m
}

// AnnotationsOf returns m's entries as Annotations, nil when m is empty.
func AnnotationsOf(m map[string]string) Annotations {
	if len(m) == 0 {
		return nil
	}
	a := make(Annotations, 0, len(m))
	for k, v := range m {
		a = append(a, Annotation{Key: k, Value: v})
	}
	slices.SortFunc(a, func(x, y Annotation) int { return strings.Compare(x.Key, y.Key) })
	return a
}

// MarshalJSON encodes the annotations as a JSON object, as the API does.
func (a Annotations) MarshalJSON() ([]byte, error) {
	if a == nil {
		return []byte("null"), nil
	}
	return json.Marshal(a.Map())
}

// UnmarshalJSON decodes the API's JSON object (or null).
func (a *Annotations) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*a = AnnotationsOf(m)
	return nil
}

var _ metav1.Object = (*Meta)(nil)

// DeepCopyInto copies m into out.
func (m *Meta) DeepCopyInto(out *Meta) {
	*out = *m
	out.Annotations = slices.Clone(m.Annotations)
}

// GetNamespace implements metav1.Object.
func (m *Meta) GetNamespace() string { return m.Namespace }

// SetNamespace implements metav1.Object.
func (m *Meta) SetNamespace(namespace string) { m.Namespace = namespace }

// GetName implements metav1.Object.
func (m *Meta) GetName() string { return m.Name }

// SetName implements metav1.Object.
func (m *Meta) SetName(name string) { m.Name = name }

// GetUID implements metav1.Object.
func (m *Meta) GetUID() types.UID { return m.UID }

// SetUID implements metav1.Object.
func (m *Meta) SetUID(uid types.UID) { m.UID = uid }

// GetResourceVersion implements metav1.Object.
func (m *Meta) GetResourceVersion() string { return m.ResourceVersion }

// SetResourceVersion implements metav1.Object.
func (m *Meta) SetResourceVersion(version string) { m.ResourceVersion = version }

// GetAnnotations implements metav1.Object: a new map of the annotations
// (the agent itself reads them with Annotations.Get).
func (m *Meta) GetAnnotations() map[string]string { return m.Annotations.Map() }

// SetAnnotations implements metav1.Object.
func (m *Meta) SetAnnotations(annotations map[string]string) {
	m.Annotations = AnnotationsOf(annotations)
}

// The fields Meta does not keep: read as zero, set as no-ops.

// GetGenerateName implements metav1.Object: always empty.
func (m *Meta) GetGenerateName() string { return "" }

// SetGenerateName implements metav1.Object: not kept.
func (m *Meta) SetGenerateName(string) {}

// GetGeneration implements metav1.Object: always 0.
func (m *Meta) GetGeneration() int64 { return 0 }

// SetGeneration implements metav1.Object: not kept.
func (m *Meta) SetGeneration(int64) {}

// GetSelfLink implements metav1.Object: always empty.
func (m *Meta) GetSelfLink() string { return "" }

// SetSelfLink implements metav1.Object: not kept.
func (m *Meta) SetSelfLink(string) {}

// GetCreationTimestamp implements metav1.Object: always zero.
func (m *Meta) GetCreationTimestamp() metav1.Time { return metav1.Time{} }

// SetCreationTimestamp implements metav1.Object: not kept.
func (m *Meta) SetCreationTimestamp(metav1.Time) {}

// GetDeletionTimestamp implements metav1.Object: always nil.
func (m *Meta) GetDeletionTimestamp() *metav1.Time { return nil }

// SetDeletionTimestamp implements metav1.Object: not kept.
func (m *Meta) SetDeletionTimestamp(*metav1.Time) {}

// GetDeletionGracePeriodSeconds implements metav1.Object: always nil.
func (m *Meta) GetDeletionGracePeriodSeconds() *int64 { return nil }

// SetDeletionGracePeriodSeconds implements metav1.Object: not kept.
func (m *Meta) SetDeletionGracePeriodSeconds(*int64) {}

// GetLabels implements metav1.Object: always nil.
func (m *Meta) GetLabels() map[string]string { return nil }

// SetLabels implements metav1.Object: not kept.
func (m *Meta) SetLabels(map[string]string) {}

// GetFinalizers implements metav1.Object: always nil.
func (m *Meta) GetFinalizers() []string { return nil }

// SetFinalizers implements metav1.Object: not kept.
func (m *Meta) SetFinalizers([]string) {}

// GetOwnerReferences implements metav1.Object: always nil.
func (m *Meta) GetOwnerReferences() []metav1.OwnerReference { return nil }

// SetOwnerReferences implements metav1.Object: not kept.
func (m *Meta) SetOwnerReferences([]metav1.OwnerReference) {}

// GetManagedFields implements metav1.Object: always nil.
func (m *Meta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }

// SetManagedFields implements metav1.Object: not kept.
func (m *Meta) SetManagedFields([]metav1.ManagedFieldsEntry) {}
