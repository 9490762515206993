package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/k8s"
)

// BenchmarkCredentialRoute measures one credential request through the
// whole handler (gate, token check, router, pod and role lookup through
// the interfaces, JSON, metrics, the JSON log line to io.Discard), with
// fakes that answer at once: kube2ra's own cost per request. The extended
// case is the document with AccountId that Java v2, Ruby and PHP read.
func BenchmarkCredentialRoute(b *testing.B) {
	for _, bc := range []struct {
		name      string
		withToken bool
		dir       string
	}{
		{"IMDSv1", false, credentialsDir},
		{"IMDSv2", true, credentialsDir},
		{"IMDSv2Extended", true, extendedCredentialsDir},
	} {
		withToken := bc.withToken
		b.Run(bc.name, func(b *testing.B) {
			log := logrus.New()
			log.SetOutput(io.Discard)
			log.SetFormatter(&logrus.JSONFormatter{})
			s, err := New(Options{HostIP: "127.0.0.1", MetadataAddr: MetadataAddrNone, Region: "eu-west-1", Logger: log, Registerer: prometheus.NewRegistry()},
				&fakePods{byIP: map[netip.Addr]*k8s.Pod{loopback: testPod()}}, &fakeRoles{role: testRole()}, &fakeCreds{creds: testCredentials()})
			if err != nil {
				b.Fatal(err)
			}
			h := s.Handler()
			req := httptest.NewRequest(http.MethodGet, "/latest/meta-data/iam/"+bc.dir+"/"+testRoleName, nil)
			req.RemoteAddr = "127.0.0.1:40000"
			if withToken {
				req.Header.Set(tokenHeader, s.tokens.mint(loopback, time.Hour))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
