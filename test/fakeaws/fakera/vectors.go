package fakera

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
)

// RecordedDir is where the repository keeps the recorded Roles Anywhere
// requests, relative to the module root (see its README for how they were
// recorded).
const RecordedDir = "rolesanywhere/testdata/recorded"

// TestdataDir finds the recorded Roles Anywhere vectors inside the
// repository, by walking up from the working directory to go.mod. Nothing
// outside the repository is read.
func TestdataDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			td := filepath.Join(dir, filepath.FromSlash(RecordedDir))
			if _, err := os.Stat(filepath.Join(td, "rsa.request.json")); err != nil {
				return "", fmt.Errorf("recorded Roles Anywhere vectors not found at %s (they are part of the repository; restore them with git checkout -- %s): %w", td, RecordedDir, err)
			}
			return td, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory: run the tests from inside the kube2ra repository")
		}
		dir = parent
	}
}

// RecordedRequest is one request captured from the official credential
// helper (the JSON files of the shared test data).
type RecordedRequest struct {
	// Method is the HTTP method.
	Method string `json:"method"`
	// Path is the request path.
	Path string `json:"path"`
	// RawQuery is the query string as received.
	RawQuery string `json:"rawQuery"`
	// Host is the Host header as received.
	Host string `json:"host"`
	// Headers are the received headers.
	Headers http.Header `json:"headers"`
	// Body is the received body.
	Body string `json:"body"`
}

// LoadRecordedRequest reads one recorded request file.
func LoadRecordedRequest(path string) (RecordedRequest, error) {
	var rr RecordedRequest
	data, err := os.ReadFile(path)
	if err != nil {
		return rr, err
	}
	if err := json.Unmarshal(data, &rr); err != nil {
		return rr, fmt.Errorf("recorded request %s is not valid JSON: %w", path, err)
	}
	return rr, nil
}

// Clone deep-copies rr so a test can alter one part.
func (rr RecordedRequest) Clone() RecordedRequest {
	out := rr
	out.Headers = rr.Headers.Clone()
	return out
}

// HTTPRequest rebuilds the request as the server received it, for
// replaying through Handler with httptest.
func (rr RecordedRequest) HTTPRequest() *http.Request {
	target := rr.Path
	if rr.RawQuery != "" {
		target += "?" + rr.RawQuery
	}
	req := httptest.NewRequest(rr.Method, target, bytes.NewReader([]byte(rr.Body)))
	req.Host = rr.Host
	req.Header = rr.Headers.Clone()
	return req
}
