package objects

import (
	"maps"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Meta is the metadata the agent keeps of the kinds it caches for the
// whole cluster, namespaces and ServiceAccounts: every agent holds every
// one of them, so each byte here is paid once per object per node.
// metav1.ObjectMeta is 232 bytes of mostly empty fields; Meta is 72.
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
	Annotations map[string]string `json:"annotations,omitempty"`
}

var _ metav1.Object = (*Meta)(nil)

// DeepCopyInto copies m into out.
func (m *Meta) DeepCopyInto(out *Meta) {
	*out = *m
	out.Annotations = maps.Clone(m.Annotations)
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

// GetAnnotations implements metav1.Object.
func (m *Meta) GetAnnotations() map[string]string { return m.Annotations }

// SetAnnotations implements metav1.Object.
func (m *Meta) SetAnnotations(annotations map[string]string) { m.Annotations = annotations }

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
