package k8s

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

// PodEvents records Warning Events on pods through a (rate-limited)
// recorder: what the pod's owners must fix, where `kubectl describe pod`
// shows it.
type PodEvents struct {
	// recorder records the Events; a RateLimitedRecorder keeps a retrying
	// pod to a handful.
	recorder record.EventRecorder
}

// NewPodEvents wraps recorder; a nil recorder records nothing.
func NewPodEvents(recorder record.EventRecorder) *PodEvents {
	return &PodEvents{recorder: recorder}
}

// PodWarning records a Warning Event with reason and message on pod.
func (e *PodEvents) PodWarning(pod *Pod, reason, message string) {
	if e == nil || e.recorder == nil || pod == nil {
		return
	}
	e.recorder.Event(podRef(pod), corev1.EventTypeWarning, reason, message)
}
