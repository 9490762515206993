// Command fakeaws runs the fake AWS endpoints of the test harness as a
// standalone process, for `make demo` and for poking at by hand:
//
//	go run ./test/fakeaws/cmd/fakeaws \
//	  --ra-listen 127.0.0.1:8443 \
//	  --ra-trust-anchor-ca rolesanywhere/testdata/recorded/root-ca.pem \
//	  --ra-trust-anchor-arn arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/0f1e... \
//	  --ra-profile-arn arn:aws:rolesanywhere:eu-central-1:123456789012:profile/9a8b... \
//	  --ra-roles arn:aws:iam::123456789012:role/app-role
//
// For each endpoint it prints one line "<name> <base URL>" on stdout once
// listening, logs to stderr, and stops on SIGINT/SIGTERM. Read-only
// inspection routes sit beside each endpoint under /_fake/ (no secrets).
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fakeaws:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	// logLevel is the logrus level.
	logLevel string
	// tlsCert and tlsKey, when both set, make every endpoint HTTPS.
	tlsCert, tlsKey string

	// raListen is the Roles Anywhere listen address; empty disables it.
	raListen string
	// raCAFile is the trust anchor's CA bundle (PEM).
	raCAFile string
	// raTrustAnchorARN names the trust anchor.
	raTrustAnchorARN string
	// raProfileARN names the profile.
	raProfileARN string
	// raRoles is the profile's comma-separated role ARN list.
	raRoles string
	// raAcceptSessionName lets requests set roleSessionName.
	raAcceptSessionName bool
	// raDurationSeconds is the profile's duration (default and maximum).
	raDurationSeconds int
	// raDisableTimeWindow turns off the ±5 min X-Amz-Date check.
	raDisableTimeWindow bool
	// raLatency delays every answer.
	raLatency time.Duration
	// raFailPercent answers that share of requests 500.
	raFailPercent int
	// raThrottlePercent answers that share of requests 429.
	raThrottlePercent int

	// The fake STS (package test/fakeaws/fakests) gets its flags here:
	// --sts-listen, --sts-region, its principals and roles.
}

// parseFlags reads args into options.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fakeaws", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.logLevel, "log-level", "info", "log level (debug, info, warn, error)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key); plain HTTP when unset")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key for --tls-cert")

	fs.StringVar(&o.raListen, "ra-listen", "127.0.0.1:8443", "Roles Anywhere listen address; empty disables the endpoint")
	fs.StringVar(&o.raCAFile, "ra-trust-anchor-ca", "", "PEM bundle of the trust anchor's CA certificates (required)")
	fs.StringVar(&o.raTrustAnchorARN, "ra-trust-anchor-arn", "", "trust anchor ARN (required)")
	fs.StringVar(&o.raProfileARN, "ra-profile-arn", "", "profile ARN (required)")
	fs.StringVar(&o.raRoles, "ra-roles", "", "comma-separated role ARNs the profile hands out (required)")
	fs.BoolVar(&o.raAcceptSessionName, "ra-accept-role-session-name", false, "profile accepts roleSessionName")
	fs.IntVar(&o.raDurationSeconds, "ra-profile-duration-seconds", 3600, "profile durationSeconds: default and maximum session length")
	fs.BoolVar(&o.raDisableTimeWindow, "ra-disable-time-window", false, "do not check X-Amz-Date against the clock (for replaying recorded requests)")
	fs.DurationVar(&o.raLatency, "ra-latency", 0, "delay every answer")
	fs.IntVar(&o.raFailPercent, "ra-fail-percent", 0, "answer this percentage of requests 500 InternalServerException")
	fs.IntVar(&o.raThrottlePercent, "ra-throttle-percent", 0, "answer this percentage of requests 429 ThrottlingException")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, errors.New("--tls-cert and --tls-key go together")
	}
	return o, nil
}

// service is one fake endpoint and where it listens.
type service struct {
	// name is printed with the URL ("rolesanywhere", later "sts").
	name string
	// listen is the address.
	listen string
	// handler answers the endpoint's requests.
	handler http.Handler
}

// run starts every enabled endpoint and serves until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := logrus.New()
	logger.SetOutput(stderr)
	level, err := logrus.ParseLevel(o.logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger.SetLevel(level)

	var services []service
	if o.raListen != "" {
		ra, err := newRolesAnywhere(o, logger)
		if err != nil {
			return err
		}
		services = append(services, service{name: "rolesanywhere", listen: o.raListen, handler: withInspection(ra.Handler(), raInspection(ra))})
	}
	// The fake STS joins here: when --sts-listen is set, build a
	// fakests.Server, append service{name: "sts", ...}, and pass
	// fakera.Options.OnIssue a function that adds each Roles Anywhere
	// session to it as a principal, so credentials issued here are
	// accepted there (role chaining, GetCallerIdentity).
	if len(services) == 0 {
		return errors.New("no endpoint enabled; set --ra-listen")
	}

	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	errc := make(chan error, len(services))
	var servers []*http.Server
	for _, svc := range services {
		l, err := net.Listen("tcp", svc.listen)
		if err != nil {
			return fmt.Errorf("%s: listening on %s failed: %w", svc.name, svc.listen, err)
		}
		srv := &http.Server{Handler: svc.handler, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		fmt.Fprintf(stdout, "%s %s://%s\n", svc.name, scheme, l.Addr())
		go func() {
			var err error
			if o.tlsCert != "" {
				err = srv.ServeTLS(l, o.tlsCert, o.tlsKey)
			} else {
				err = srv.Serve(l)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", svc.name, err)
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdownCtx)
	}
	return runErr
}

// newRolesAnywhere builds the fake Roles Anywhere server from the flags.
func newRolesAnywhere(o options, logger logrus.FieldLogger) (*fakera.Server, error) {
	if o.raCAFile == "" || o.raTrustAnchorARN == "" || o.raProfileARN == "" || o.raRoles == "" {
		return nil, errors.New("--ra-trust-anchor-ca, --ra-trust-anchor-arn, --ra-profile-arn and --ra-roles are required (or disable Roles Anywhere with --ra-listen=)")
	}
	cas, err := readCertificates(o.raCAFile)
	if err != nil {
		return nil, fmt.Errorf("--ra-trust-anchor-ca: %w", err)
	}
	var roles []string
	for _, r := range strings.Split(o.raRoles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	s, err := fakera.New(fakera.Options{
		TrustAnchors:      []fakera.TrustAnchor{{ARN: o.raTrustAnchorARN, CAs: cas}},
		Profiles:          []fakera.Profile{{ARN: o.raProfileARN, RoleARNs: roles, AcceptRoleSessionName: o.raAcceptSessionName, DurationSeconds: o.raDurationSeconds}},
		DisableTimeWindow: o.raDisableTimeWindow,
		Logger:            logger,
	})
	if err != nil {
		return nil, err
	}
	s.SetLatency(o.raLatency)
	s.SetFailurePercent(o.raFailPercent)
	s.SetThrottlePercent(o.raThrottlePercent)
	return s, nil
}

// readCertificates reads every certificate of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return out, nil
}

// withInspection serves /_fake/ routes from inspect and everything else
// from h.
func withInspection(h http.Handler, inspect http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/_fake/", inspect)
	mux.Handle("/", h)
	return mux
}

// raInspection answers GET /_fake/stats, /_fake/accepted and
// /_fake/whois?accessKeyId=... for the Roles Anywhere fake, without secrets.
func raInspection(s *fakera.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_fake/stats", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Stats()) })
	mux.HandleFunc("GET /_fake/accepted", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Accepted()) })
	mux.HandleFunc("GET /_fake/whois", func(w http.ResponseWriter, r *http.Request) {
		id, ok := s.WhoIs(r.URL.Query().Get("accessKeyId"))
		if !ok {
			http.Error(w, "unknown or expired access key", http.StatusNotFound)
			return
		}
		writeJSON(w, id)
	})
	return mux
}

// writeJSON writes v as indented JSON.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
