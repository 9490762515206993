package kubeapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
)

// testCA is a self-signed certificate for 127.0.0.1 that is its own CA.
type testCA struct {
	cert tls.Certificate
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// apiServer is a TLS server with HTTP/2 that answers its protocol and the
// request's Authorization header.
func apiServer(t *testing.T, ca testCA) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.Header.Get("Authorization"))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func fetchURL(t *testing.T, c *http.Client, url string) (string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestAPIClientSpeaksHTTP2WithTheConfigsCredentials: the agent's own
// transport (not client-go's, which links a second HTTP/2) talks HTTP/2
// to the API server, with client-go's health check, the config's CA and
// a bearer token re-read from its file; DISABLE_HTTP2 falls back to
// HTTP/1.1 as client-go does.
func TestAPIClientSpeaksHTTP2WithTheConfigsCredentials(t *testing.T) {
	ca := newTestCA(t, "api")
	srv := apiServer(t, ca)
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: srv.URL, BearerTokenFile: token, TLSClientConfig: rest.TLSClientConfig{CAData: ca.pem}}

	c, err := httpClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fetchURL(t, c, srv.URL); err != nil || got != "HTTP/2.0 Bearer first" {
		t.Fatalf("answer %q, %v; want HTTP/2.0 with the token file's token", got, err)
	}

	t.Setenv("DISABLE_HTTP2", "1")
	c, err = httpClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fetchURL(t, c, srv.URL); err != nil || got != "HTTP/1.1 Bearer first" {
		t.Fatalf("with DISABLE_HTTP2: answer %q, %v; want HTTP/1.1", got, err)
	}

	// A server the config's CA did not sign is refused.
	other := apiServer(t, newTestCA(t, "other"))
	if _, err := fetchURL(t, c, other.URL); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server of another CA answered (err %v)", err)
	}
}

// TestAPITransportHealthCheck: the HTTP/2 connection health check has
// client-go's timings and its environment overrides.
func TestAPITransportHealthCheck(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	tc, err := cfg.TransportConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc2 := range []struct {
		readIdle, ping string
		want, wantPing time.Duration
	}{
		{"", "", 30 * time.Second, 15 * time.Second},
		{"0", "5", 0, 5 * time.Second},
		{"x", "-1", 30 * time.Second, 15 * time.Second},
	} {
		t.Setenv("HTTP2_READ_IDLE_TIMEOUT_SECONDS", tc2.readIdle)
		t.Setenv("HTTP2_PING_TIMEOUT_SECONDS", tc2.ping)
		tr, err := apiTransport(tc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !tr.ForceAttemptHTTP2 || tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout != tc2.want || tr.HTTP2.PingTimeout != tc2.wantPing {
			t.Errorf("with %q/%q: HTTP/2 %v, config %+v; want a ping after %s, answered within %s", tc2.readIdle, tc2.ping, tr.ForceAttemptHTTP2, tr.HTTP2, tc2.want, tc2.wantPing)
		}
		if tr.TLSHandshakeTimeout != 10*time.Second || tr.IdleConnTimeout != 90*time.Second || tr.MaxIdleConnsPerHost != 25 || tr.Proxy == nil {
			t.Errorf("transport defaults differ from client-go's: %+v", tr)
		}
	}
}

// TestAPIClientFollowsARotatedCA: a CA file that changes is re-read within
// five minutes and new connections trust the new CA; a file that does not
// parse keeps the CA in use.
func TestAPIClientFollowsARotatedCA(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	oldSrv, newSrv := apiServer(t, oldCA), apiServer(t, newCA)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, oldCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	tc, err := (&rest.Config{Host: oldSrv.URL, TLSClientConfig: rest.TLSClientConfig{CAFile: caFile}}).TransportConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := httpClientFor(&rest.Config{Host: oldSrv.URL, TLSClientConfig: rest.TLSClientConfig{CAFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	// The client as the agent builds it reloads its CA file (client-go's
	// ClientsAllowCARotation is on by default).
	reloads := false
	for rt := c.Transport; rt != nil; {
		if _, ok := rt.(*caReloader); ok {
			reloads = true
			break
		}
		w, ok := rt.(utilnet.RoundTripperWrapper)
		if !ok {
			break
		}
		rt = w.WrappedRoundTripper()
	}
	if !reloads {
		t.Fatalf("the client of a CA file does not reload it (transport %T)", c.Transport)
	}
	if _, err := fetchURL(t, c, oldSrv.URL); err != nil {
		t.Fatalf("the CA file's server: %v", err)
	}

	// The reloader itself, on a fake clock.
	clk := clocktesting.NewFakePassiveClock(time.Now())
	tlsConfig := &tls.Config{RootCAs: x509.NewCertPool()}
	tlsConfig.RootCAs.AppendCertsFromPEM(oldCA.pem)
	tr, err := apiTransport(tc, tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	r := newCAReloader(caFile, oldCA.pem, tr, clk)
	client := &http.Client{Transport: r}
	if _, err := fetchURL(t, client, newSrv.URL); err == nil {
		t.Fatal("the new CA's server was trusted before the CA changed")
	}
	if err := os.WriteFile(caFile, newCA.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(4 * time.Minute))
	if _, err := fetchURL(t, client, newSrv.URL); err == nil {
		t.Fatal("the CA file was re-read before five minutes")
	}
	clk.SetTime(clk.Now().Add(time.Minute))
	if got, err := fetchURL(t, client, newSrv.URL); err != nil || !strings.HasPrefix(got, "HTTP/2.0") {
		t.Fatalf("after the CA changed and five minutes passed: %q, %v; want the new CA trusted over HTTP/2", got, err)
	}
	if _, err := fetchURL(t, client, oldSrv.URL); err == nil {
		t.Fatal("the old CA is still trusted by new connections")
	}

	if err := os.WriteFile(caFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.SetTime(clk.Now().Add(5 * time.Minute))
	if _, err := fetchURL(t, client, newSrv.URL); err != nil {
		t.Fatalf("a CA file that does not parse replaced the CA in use: %v", err)
	}
}
