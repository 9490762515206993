package bench

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testCredPath = "/latest/meta-data/iam/security-credentials/app"

var testCredBody = []byte(CredentialsPrefix + ",\n  \"LastUpdated\" : \"2026-01-01T00:00:00Z\",\n  \"Type\" : \"AWS-HMAC\"\n}")

func startBaseline(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(BaselineHandler(BaselineOptions{
		Path:   testCredPath,
		Header: [][2]string{{"Content-Type", "text/plain"}, {"Date", "ignored"}, {"Content-Length", "1"}},
		Body:   testCredBody,
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestLoadOverTokensCountsOnlyTheWindowAndSeesNoErrors(t *testing.T) {
	addr := startBaseline(t)
	res, err := RunLoad(context.Background(), LoadOptions{
		Addr: addr, Path: testCredPath, Conns: 3, Token: true,
		Start: time.Now().Add(50 * time.Millisecond), Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond,
		Expect: CredentialsPrefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.OK == 0 {
		t.Fatalf("ok %d errors %d (%s)", res.OK, res.Errors, res.FirstError)
	}
	if res.Latency.Count() != res.OK || res.Seconds != 0.2 {
		t.Fatalf("histogram %d values for %d OK, window %vs", res.Latency.Count(), res.OK, res.Seconds)
	}
}

func TestLoadCountsWrongAnswersAsErrors(t *testing.T) {
	addr := startBaseline(t)
	res, err := RunLoad(context.Background(), LoadOptions{Addr: addr, Path: "/latest/meta-data/other", Conns: 1, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors == 0 || res.Statuses[404] == 0 {
		t.Fatalf("404s not counted: %+v", res)
	}
	res, err = RunLoad(context.Background(), LoadOptions{Addr: addr, Path: testCredPath, Conns: 1, Duration: 50 * time.Millisecond, Expect: "something else"})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Errors == 0 {
		t.Fatalf("unexpected bodies not counted: %+v", res)
	}
}

func TestPacedLoadKeepsItsRate(t *testing.T) {
	addr := startBaseline(t)
	res, err := RunLoad(context.Background(), LoadOptions{Addr: addr, Path: testCredPath, Conns: 2, Duration: 500 * time.Millisecond, RatePerConn: 40})
	if err != nil {
		t.Fatal(err)
	}
	// 2 connections × 40/s × 0.5 s = 40 requests, give or take the edges.
	if res.OK < 30 || res.OK > 44 {
		t.Fatalf("paced load sent %d requests, want about 40", res.OK)
	}
}

func TestClientReadsChunkedAndCloseDelimitedBodies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for _, part := range []string{"hello ", "chunked ", "world"} {
				_, _ = w.Write([]byte(part))
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Connection", "close")
		_, _ = w.Write([]byte("bye"))
	}))
	defer srv.Close()
	c, err := Dial(strings.TrimPrefix(srv.URL, "http://"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(BuildRequest("GET", "/chunked"), time.Now().Add(time.Second))
	if err != nil || string(resp.Body) != "hello chunked world" {
		t.Fatalf("chunked body %q, %v", resp.Body, err)
	}
	resp, err = c.Do(BuildRequest("GET", "/close"), time.Now().Add(time.Second))
	if err != nil || string(resp.Body) != "bye" || !resp.Close {
		t.Fatalf("close body %q close=%v, %v", resp.Body, resp.Close, err)
	}
	if _, err := c.Do(BuildRequest("GET", "/close"), time.Now().Add(time.Second)); err == nil {
		t.Fatal("request on a closed connection succeeded")
	}
}

func TestFirstRequestRetriesUntilCredentials(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 3 {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(testCredBody)
	}))
	defer srv.Close()
	var started bytes.Buffer
	res, err := FirstRequest(context.Background(), FirstRequestOptions{
		Addr: strings.TrimPrefix(srv.URL, "http://"), Path: testCredPath, Deadline: time.Now().Add(5 * time.Second),
	}, &started)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 4 || res.Statuses[404] != 3 || started.String() != "started\n" {
		t.Fatalf("attempts %d statuses %v started %q", res.Attempts, res.Statuses, started.String())
	}
	if res.OKUnixNano < res.StartedUnixNano {
		t.Fatalf("success at %d before the start at %d", res.OKUnixNano, res.StartedUnixNano)
	}
}

func TestFirstRequestGivesUpAtItsDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every attempt is refused
	_, err = FirstRequest(context.Background(), FirstRequestOptions{Addr: addr, Path: testCredPath, Deadline: time.Now().Add(100 * time.Millisecond)}, nil)
	if err == nil {
		t.Fatal("no error without a server")
	}
}
