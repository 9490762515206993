package rolesanywhere

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
)

const (
	// DefaultReloadInterval is how often the key files are re-read. Polling
	// content (not inotify) sees the kubelet's atomic "..data" symlink swap
	// and in-place rewrites alike; the files are a few KB.
	DefaultReloadInterval = 2 * time.Second
	// DefaultExpiryWarning is how long before notAfter the agent starts
	// warning about the certificate.
	DefaultExpiryWarning = 7 * 24 * time.Hour
	// expiryWarningEvery rate-limits the expiry warning.
	expiryWarningEvery = time.Hour
	// rejectLogEvery rate-limits the log of a rejected replacement that
	// stays on disk unchanged.
	rejectLogEvery = time.Minute
)

// errRacingWrite means two reads of the key files disagreed.
var errRacingWrite = errors.New("key files changed while being read")

// KeyPairProvider hands out the key pair to sign the next request with.
type KeyPairProvider interface {
	// Current is the pair in use; never nil once constructed.
	Current() *KeyPair
}

// WatcherOptions configures a KeyPairWatcher.
type WatcherOptions struct {
	// Interval between polls; DefaultReloadInterval when zero.
	Interval time.Duration
	// ExpiryWarning is how long before notAfter to warn; DefaultExpiryWarning when zero.
	ExpiryWarning time.Duration
	// Logger receives reload and expiry messages; discarded when nil.
	Logger logrus.FieldLogger
	// Registerer gets the certificate metrics; none when nil.
	Registerer prometheus.Registerer
	// Clock is the time source; the real clock when nil.
	Clock clock.Clock
}

// KeyPairWatcher keeps the node's key pair current: it re-reads the files
// when their content changes and swaps in the new pair only when it passes
// every check of LoadKeyPair. Every signature uses one Current() snapshot,
// so a (certificate, key) mix of old and new cannot happen.
type KeyPairWatcher struct {
	// files are the paths polled.
	files KeyFiles
	// current is the pair in use; swapped atomically on a good reload.
	current atomic.Pointer[KeyPair]
	// interval is the polling period.
	interval time.Duration
	// warnBefore is the expiry warning threshold.
	warnBefore time.Duration
	// logger receives reload and expiry messages.
	logger logrus.FieldLogger
	// clock is the time source.
	clock clock.Clock
	// metrics are the exported gauges and counters (nil-safe).
	metrics *watcherMetrics

	// mu serialises Check and guards the fields below.
	mu sync.Mutex
	// loaded is the digest of the file contents of the current pair.
	loaded [sha256.Size]byte
	// rejected is the digest of the file contents last rejected.
	rejected [sha256.Size]byte
	// lastReject is when a rejected replacement was last logged.
	lastReject time.Time
	// lastWarn is when the expiry warning was last logged.
	lastWarn time.Time
}

// watcherMetrics are the certificate metrics.
type watcherMetrics struct {
	// expiry is seconds until the current leaf's notAfter.
	expiry prometheus.Gauge
	// reloads counts reload attempts by result.
	reloads *prometheus.CounterVec
}

// newWatcherMetrics registers the metrics on reg; nil reg means no metrics.
func newWatcherMetrics(reg prometheus.Registerer) (*watcherMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &watcherMetrics{
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kube2ra_rolesanywhere_certificate_expiry_seconds",
			Help: "Seconds until the Roles Anywhere node certificate in use expires (negative once expired).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube2ra_rolesanywhere_certificate_reloads_total",
			Help: "Attempts to load a changed Roles Anywhere certificate and key, by result (loaded, rejected).",
		}, []string{"result"}),
	}
	var err error
	if m.expiry, err = register(reg, m.expiry); err != nil {
		return nil, err
	}
	if m.reloads, err = register(reg, m.reloads); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same name (two Sources in one process share the metric).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering Roles Anywhere metrics failed: %w", err)
	}
	return c, nil
}

// NewKeyPairWatcher loads the files once, refusing a bad pair, and returns
// a watcher serving it. Call Run to follow changes.
func NewKeyPairWatcher(files KeyFiles, opts WatcherOptions) (*KeyPairWatcher, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultReloadInterval
	}
	if opts.ExpiryWarning <= 0 {
		opts.ExpiryWarning = DefaultExpiryWarning
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	m, err := newWatcherMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	w := &KeyPairWatcher{
		files:      files,
		interval:   opts.Interval,
		warnBefore: opts.ExpiryWarning,
		logger:     opts.Logger.WithField("component", "rolesanywhere-keys"),
		clock:      opts.Clock,
		metrics:    m,
	}
	mat, pair, err := w.load()
	if err != nil {
		return nil, err
	}
	w.loaded = mat
	w.current.Store(pair)
	w.logger.WithFields(pairFields(pair)).Info("Loaded Roles Anywhere certificate")
	w.warnChain(pair)
	w.observeExpiry(pair)
	return w, nil
}

// Current is the pair to sign with.
func (w *KeyPairWatcher) Current() *KeyPair { return w.current.Load() }

// Run polls the files until ctx ends.
func (w *KeyPairWatcher) Run(ctx context.Context) {
	t := w.clock.NewTimer(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		_, _ = w.Check()
		t.Reset(w.interval)
	}
}

// Check polls once: when the files' content changed it loads and checks
// the new pair and swaps it in, or keeps the old one and returns why not.
// It also refreshes the expiry metric and warning.
func (w *KeyPairWatcher) Check() (swapped bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer func() { w.observeExpiry(w.current.Load()) }()

	digest, pair, err := w.load()
	if digest == w.loaded {
		// Unchanged files; the current pair's own expiry is reported by
		// observeExpiry, not as a rejected replacement.
		return false, nil
	}
	if errors.Is(err, errRacingWrite) {
		w.logger.WithError(err).Debug("Key files are being replaced; retrying at the next poll")
		return false, err
	}
	if err != nil {
		now := w.clock.Now()
		changed := digest != [sha256.Size]byte{} && digest != w.rejected
		if changed || now.Sub(w.lastReject) >= rejectLogEvery {
			w.lastReject = now
			w.logger.WithError(err).WithFields(pairFields(w.current.Load())).Warn("Rejected changed Roles Anywhere certificate or key; still using the previous pair")
		}
		if changed {
			w.rejected = digest
			if w.metrics != nil {
				w.metrics.reloads.WithLabelValues("rejected").Inc()
			}
		}
		return false, err
	}
	old := w.current.Swap(pair)
	w.loaded = digest
	w.lastWarn = time.Time{}
	if w.metrics != nil {
		w.metrics.reloads.WithLabelValues("loaded").Inc()
	}
	w.logger.WithFields(pairFields(pair)).WithField("previousSerial", old.Serial()).Info("Loaded rotated Roles Anywhere certificate")
	w.warnChain(pair)
	return true, nil
}

// warnChain logs what in a newly loaded pair's intermediates AWS would
// refuse (KeyPair.ChainWarnings).
func (w *KeyPairWatcher) warnChain(pair *KeyPair) {
	for _, msg := range pair.ChainWarnings(w.clock.Now()) {
		w.logger.WithFields(pairFields(pair)).Warn(msg)
	}
}

// load reads the files twice and parses them only when both reads agree,
// so a read that straddles a symlink swap or a half-written file is
// retried at the next poll rather than half-applied. The digest is zero
// when the files could not be read consistently.
func (w *KeyPairWatcher) load() ([sha256.Size]byte, *KeyPair, error) {
	var zero [sha256.Size]byte
	first, err := readKeyMaterial(w.files)
	if err != nil {
		return zero, nil, err
	}
	second, err := readKeyMaterial(w.files)
	if err != nil {
		return zero, nil, err
	}
	if !first.equal(second) {
		return zero, nil, errRacingWrite
	}
	h := sha256.New()
	for _, part := range [][]byte{first.cert, first.key, first.intermediates, first.password} {
		var n [8]byte
		for i, l := 0, len(part); i < 8; i, l = i+1, l>>8 {
			n[i] = byte(l)
		}
		h.Write(n[:])
		h.Write(part)
	}
	var digest [sha256.Size]byte
	copy(digest[:], h.Sum(nil))
	pair, err := parseKeyMaterial(w.files, first, w.clock.Now())
	return digest, pair, err
}

// observeExpiry updates the gauge and logs the expiry warning, at most
// once per expiryWarningEvery.
func (w *KeyPairWatcher) observeExpiry(pair *KeyPair) {
	if pair == nil {
		return
	}
	now := w.clock.Now()
	left := pair.Leaf.NotAfter.Sub(now)
	if w.metrics != nil {
		w.metrics.expiry.Set(left.Seconds())
	}
	if left >= w.warnBefore {
		return
	}
	if !w.lastWarn.IsZero() && now.Sub(w.lastWarn) < expiryWarningEvery {
		return
	}
	w.lastWarn = now
	entry := w.logger.WithFields(pairFields(pair)).WithField("expiresIn", left.Round(time.Second).String())
	if left <= 0 {
		entry.Error("Roles Anywhere certificate has expired; CreateSession will be denied until it is renewed")
		return
	}
	entry.Warn("Roles Anywhere certificate expires soon; renew it")
}

// pairFields are the loggable facts of a pair (never key material).
func pairFields(p *KeyPair) logrus.Fields {
	if p == nil {
		return logrus.Fields{}
	}
	return logrus.Fields{
		"serial":   p.Serial(),
		"subject":  p.Leaf.Subject.String(),
		"notAfter": p.Leaf.NotAfter.UTC().Format(time.RFC3339),
	}
}
