package rolesanywhere

import (
	"errors"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/credentials"
)

// refusedSessionNameText is what Roles Anywhere answers, with 403
// AccessDeniedException, to a CreateSession that sets roleSessionName when
// the profile's acceptRoleSessionName is false ("Not authorized to set
// roleSessionName.", aws/rolesanywhere-credential-helper#19), lower-cased.
const refusedSessionNameText = "not authorized to set rolesessionname"

// SessionNamesRefusedMessage is the warning (log and Event) for a profile
// that refuses custom role session names.
const SessionNamesRefusedMessage = "the Roles Anywhere profile refuses custom role session names (its acceptRoleSessionName is false): " +
	"sessions are created without a name from now on, so CloudTrail names them after the node certificate's serial, " +
	"and the agent's log ties each access key ID to the pods it served; set acceptRoleSessionName to true on the profile " +
	"and restart the agent, or set --session-name=none to stop asking"

// sessionNameFallback remembers that the profile refused a custom role
// session name, so later calls send none (one profile per Source: this is
// the memory per profile), and says so once: a warning, a gauge and the
// OnSessionNamesRefused hook (a Kubernetes Event).
type sessionNameFallback struct {
	// profileARN is the profile that refused.
	profileARN string
	// refused is set by the first refusal; it lasts until the process ends.
	refused atomic.Bool
	// gauge is 1 for the profile once it refused; nil without a registerer.
	gauge *prometheus.GaugeVec
	// log receives the warning.
	log logrus.FieldLogger
	// notify is Deps.OnSessionNamesRefused; nil when unset.
	notify func(profileARN, message string)
}

func newSessionNameFallback(profileARN string, deps Deps, log logrus.FieldLogger) (*sessionNameFallback, error) {
	f := &sessionNameFallback{profileARN: profileARN, log: log, notify: deps.OnSessionNamesRefused}
	if deps.Registerer != nil {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kube2ra_rolesanywhere_session_names_refused",
			Help: "1 once the Roles Anywhere profile refused a custom role session name (acceptRoleSessionName is false) and sessions are created without one.",
		}, []string{"profile"})
		var err error
		if f.gauge, err = register(deps.Registerer, g); err != nil {
			return nil, err
		}
		f.gauge.WithLabelValues(profileARN).Set(0)
	}
	return f, nil
}

// nameToSend is the roleSessionName to send for a request asking for name.
func (f *sessionNameFallback) nameToSend(name string) string {
	if f.refused.Load() {
		return ""
	}
	return name
}

// refusal reports whether err is the profile refusing a custom session
// name, and if so records it (the first time, with the warning).
func (f *sessionNameFallback) refusal(err error) bool {
	var e *credentials.Error
	if !errors.As(err, &e) || e.Kind != credentials.KindDenied || !strings.Contains(strings.ToLower(e.Message), refusedSessionNameText) {
		return false
	}
	if f.refused.CompareAndSwap(false, true) {
		if f.gauge != nil {
			f.gauge.WithLabelValues(f.profileARN).Set(1)
		}
		f.log.WithFields(logrus.Fields{"profile": f.profileARN, "code": e.Code, "awsMessage": e.Message}).Warn(SessionNamesRefusedMessage)
		if f.notify != nil {
			f.notify(f.profileARN, SessionNamesRefusedMessage)
		}
	}
	return true
}
