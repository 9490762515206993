package objects

import "k8s.io/apimachinery/pkg/types"

// ObjectVersion is one object's identity and version: what the watch
// currency check compares an informer's cache with.
type ObjectVersion struct {
	// Namespace is empty for cluster-scoped objects.
	Namespace string
	// Name is the object's name.
	Name string
	// UID tells this object from an earlier one of the same name.
	UID types.UID
	// ResourceVersion is the object's version.
	ResourceVersion string
}

// VersionList is a consistent list of objects' versions: the API server's
// state at ResourceVersion.
type VersionList struct {
	// ResourceVersion is the list's resourceVersion.
	ResourceVersion string
	// Items are the listed objects.
	Items []ObjectVersion
}
