package objects

import (
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Hand-written deep copies: the fields above are few, and generating them
// would bring the generator's conventions for one file.

// copyItems deep-copies a list's items with copyInto.
func copyItems[T any](in []T, copyInto func(*T, *T)) []T {
	if in == nil {
		return nil
	}
	out := make([]T, len(in))
	for i := range in {
		copyInto(&in[i], &out[i])
	}
	return out
}

// DeepCopyInto copies p into out.
func (p *Pod) DeepCopyInto(out *Pod) {
	out.TypeMeta = p.TypeMeta
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	p.Spec.DeepCopyInto(&out.Spec)
	out.Status = p.Status
	out.Status.PodIPs = slices.Clone(p.Status.PodIPs)
}

// DeepCopy copies p.
func (p *Pod) DeepCopy() *Pod {
	if p == nil {
		return nil
	}
	out := new(Pod)
	p.DeepCopyInto(out)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (p *Pod) DeepCopyObject() runtime.Object { return p.DeepCopy() }

// DeepCopyInto copies s into out.
func (s *PodSpec) DeepCopyInto(out *PodSpec) {
	*out = *s
	out.Containers = copyItems(s.Containers, (*Container).DeepCopyInto)
}

// DeepCopyInto copies c into out.
func (c *Container) DeepCopyInto(out *Container) {
	*out = *c
	out.Command = slices.Clone(c.Command)
	out.Args = slices.Clone(c.Args)
	if c.Env != nil {
		out.Env = make([]EnvVar, len(c.Env))
		for i, e := range c.Env {
			out.Env[i] = e
			if e.ValueFrom != nil {
				from := *e.ValueFrom
				if from.FieldRef != nil {
					ref := *from.FieldRef
					from.FieldRef = &ref
				}
				out.Env[i].ValueFrom = &from
			}
		}
	}
}

// DeepCopyInto copies l into out.
func (l *PodList) DeepCopyInto(out *PodList) {
	out.TypeMeta = l.TypeMeta
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*Pod).DeepCopyInto)
}

// DeepCopyObject is runtime.Object's copy.
func (l *PodList) DeepCopyObject() runtime.Object {
	out := new(PodList)
	l.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies n into out.
func (n *Namespace) DeepCopyInto(out *Namespace) {
	out.TypeMeta = n.TypeMeta
	n.Meta.DeepCopyInto(&out.Meta)
}

// DeepCopyObject is runtime.Object's copy.
func (n *Namespace) DeepCopyObject() runtime.Object {
	out := new(Namespace)
	n.DeepCopyInto(out)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (l *NamespaceList) DeepCopyObject() runtime.Object {
	out := &NamespaceList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*Namespace).DeepCopyInto)
	return out
}

// DeepCopyInto copies s into out.
func (s *ServiceAccount) DeepCopyInto(out *ServiceAccount) {
	out.TypeMeta = s.TypeMeta
	s.Meta.DeepCopyInto(&out.Meta)
}

// DeepCopyObject is runtime.Object's copy.
func (s *ServiceAccount) DeepCopyObject() runtime.Object {
	out := new(ServiceAccount)
	s.DeepCopyInto(out)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (l *ServiceAccountList) DeepCopyObject() runtime.Object {
	out := &ServiceAccountList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*ServiceAccount).DeepCopyInto)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (n *Node) DeepCopyObject() runtime.Object {
	out := &Node{TypeMeta: n.TypeMeta}
	n.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if n.Spec.Taints != nil {
		out.Spec.Taints = make([]Taint, len(n.Spec.Taints))
		for i, t := range n.Spec.Taints {
			out.Spec.Taints[i] = t
			if t.TimeAdded != nil {
				out.Spec.Taints[i].TimeAdded = t.TimeAdded.DeepCopy()
			}
		}
	}
	out.Status.Addresses = slices.Clone(n.Status.Addresses)
	return out
}

// DeepCopyInto copies d into out.
func (d *DaemonSet) DeepCopyInto(out *DaemonSet) {
	out.TypeMeta = d.TypeMeta
	d.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	d.Spec.Template.ObjectMeta.DeepCopyInto(&out.Spec.Template.ObjectMeta)
	d.Spec.Template.Spec.DeepCopyInto(&out.Spec.Template.Spec)
}

// DeepCopyObject is runtime.Object's copy.
func (d *DaemonSet) DeepCopyObject() runtime.Object {
	out := new(DaemonSet)
	d.DeepCopyInto(out)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (l *DaemonSetList) DeepCopyObject() runtime.Object {
	out := &DaemonSetList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*DaemonSet).DeepCopyInto)
	return out
}

// DeepCopyObject is runtime.Object's copy.
func (e *Event) DeepCopyObject() runtime.Object {
	out := &Event{TypeMeta: e.TypeMeta, InvolvedObject: e.InvolvedObject, Reason: e.Reason, Message: e.Message,
		Source: e.Source, Count: e.Count, Type: e.Type}
	e.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	e.FirstTimestamp.DeepCopyInto(&out.FirstTimestamp)
	e.LastTimestamp.DeepCopyInto(&out.LastTimestamp)
	return out
}

// DeepCopyObject is runtime.Object's copy; a reference is an Event's
// target, handed around as a runtime.Object.
func (r *ObjectReference) DeepCopyObject() runtime.Object {
	out := *r
	return &out
}

// GetObjectKind is the reference's own kind and API version (a reference
// is a runtime.Object so that Event recorders take it as their target).
func (r *ObjectReference) GetObjectKind() schema.ObjectKind { return r }

// SetGroupVersionKind sets the reference's kind and API version.
func (r *ObjectReference) SetGroupVersionKind(gvk schema.GroupVersionKind) {
	r.APIVersion, r.Kind = gvk.ToAPIVersionAndKind()
}

// GroupVersionKind is the reference's kind and API version.
func (r *ObjectReference) GroupVersionKind() schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
}
