package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kube2ra/kube2ra/test/fakeaws/fakera"
)

func TestStandaloneFakeAcceptsARecordedRequestAndReportsIt(t *testing.T) {
	dir, err := fakera.TestdataDir()
	if err != nil {
		t.Fatal(err)
	}
	rr, err := fakera.LoadRecordedRequest(filepath.Join(dir, "rsa.request.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"--ra-listen", "127.0.0.1:0",
			"--ra-trust-anchor-ca", filepath.Join(dir, "root-ca.pem"),
			"--ra-trust-anchor-arn", "arn:aws:rolesanywhere:eu-central-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
			"--ra-profile-arn", "arn:aws:rolesanywhere:eu-central-1:123456789012:profile/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4",
			"--ra-roles", "arn:aws:iam::123456789012:role/app-role",
			"--ra-disable-time-window",
			"--log-level", "error",
		}, pw, io.Discard)
		_ = pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no ready line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	name, base, _ := strings.Cut(strings.TrimSpace(line), " ")
	if name != "rolesanywhere" || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("ready line %q", line)
	}

	req, _ := http.NewRequest(rr.Method, base+rr.Path+"?"+rr.RawQuery, strings.NewReader(rr.Body))
	req.Header = rr.Headers.Clone()
	req.Header.Del("Content-Length")
	req.Host = rr.Host // signed: must be what the helper signed
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d (%s)", resp.StatusCode, resp.Header.Get("X-Amzn-ErrorType"))
	}

	resp, err = client.Get(base + "/_fake/accepted")
	if err != nil {
		t.Fatal(err)
	}
	var accepted []fakera.Accepted
	err = json.NewDecoder(resp.Body).Decode(&accepted)
	_ = resp.Body.Close()
	if err != nil || len(accepted) != 1 || accepted[0].Serial != "104705333034257" {
		t.Fatalf("accepted %+v (%v)", accepted, err)
	}
	resp, err = client.Get(base + "/_fake/whois?accessKeyId=" + accepted[0].AccessKeyID)
	if err != nil {
		t.Fatal(err)
	}
	var id fakera.Identity
	err = json.NewDecoder(resp.Body).Decode(&id)
	_ = resp.Body.Close()
	if err != nil || !strings.Contains(id.Arn, "assumed-role/app-role/") {
		t.Fatalf("whois %+v (%v)", id, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func TestStandaloneFakeRefusesIncompleteFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--ra-listen", "127.0.0.1:0"},
		{"--ra-listen", ""},
		{"--tls-cert", "x"},
		{"stray"},
	} {
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
