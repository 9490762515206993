package bench

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// BaselineOptions describe the bare server kube2ra is compared with.
type BaselineOptions struct {
	// Addr is where it listens (kube2ra's own HOST_IP:app-port, so the same
	// DNAT rule leads to it).
	Addr string `json:"addr"`
	// Path is the one route it answers.
	Path string `json:"path"`
	// Header are the response headers kube2ra sent (Date and
	// Content-Length are left to net/http, as kube2ra does).
	Header [][2]string `json:"header"`
	// Body is kube2ra's response body, byte for byte.
	Body []byte `json:"body"`
}

// baselineToken is what the baseline answers to a token PUT; it accepts
// any token on GET, as a bare handler would.
const baselineToken = "baseline-token-not-checked"

// BaselineHandler answers Path with the recorded bytes, the token PUT with
// a fixed token, and everything else 404: the least a metadata endpoint can
// do, with no lookup, no policy, no cache, no log and no metrics.
func BaselineHandler(o BaselineOptions) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+o.Path, func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		for _, kv := range o.Header {
			if strings.EqualFold(kv[0], "Date") || strings.EqualFold(kv[0], "Content-Length") {
				continue
			}
			h[http.CanonicalHeaderKey(kv[0])] = append(h[http.CanonicalHeaderKey(kv[0])], kv[1])
		}
		h.Set("Content-Length", strconv.Itoa(len(o.Body)))
		_, _ = w.Write(o.Body)
	})
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(tokenTTLHeader, r.Header.Get(tokenTTLHeader))
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(baselineToken))
	})
	return mux
}

// NewBaselineServer is a net/http server for the baseline handler.
func NewBaselineServer(o BaselineOptions) *http.Server {
	return &http.Server{Addr: o.Addr, Handler: BaselineHandler(o), ReadHeaderTimeout: 10 * time.Second}
}
