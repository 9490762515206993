package k8s

import (
	"github.com/kube2ra/kube2ra/kubeapi/objects"
)

// PodEvents records Warning Events on pods through a (rate-limited)
// recorder: what the pod's owners must fix, where `kubectl describe pod`
// shows it.
type PodEvents struct {
	// recorder records the Events; a RateLimitedRecorder keeps a retrying
	// pod to a handful.
	recorder Recorder
}

// NewPodEvents wraps recorder; a nil recorder records nothing.
func NewPodEvents(recorder Recorder) *PodEvents {
	return &PodEvents{recorder: recorder}
}

// PodWarning records a Warning Event with reason and message on pod.
func (e *PodEvents) PodWarning(pod *Pod, reason, message string) {
	if e == nil || e.recorder == nil || pod == nil {
		return
	}
	e.recorder.Event(podRef(pod), objects.EventTypeWarning, reason, message)
}
