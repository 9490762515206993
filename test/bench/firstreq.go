package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// FirstRequestOptions describe a pod that asks for its credentials from
// before its IP is known until the first success.
type FirstRequestOptions struct {
	// Addr is host:port (169.254.169.254:80).
	Addr string `json:"addr"`
	// Path is the credential path.
	Path string `json:"path"`
	// Deadline ends the polling with an error.
	Deadline time.Time `json:"deadline"`
	// Retry is the pause after a failed attempt.
	Retry time.Duration `json:"retry"`
}

// FirstRequestResult is when the pod got its first credentials.
type FirstRequestResult struct {
	// OKUnixNano is the wall-clock time the first 200 with credentials was read.
	OKUnixNano int64 `json:"okUnixNano"`
	// StartedUnixNano is when the first request was sent.
	StartedUnixNano int64 `json:"startedUnixNano"`
	// LastRequest is how long the successful request itself took.
	LastRequest time.Duration `json:"lastRequest"`
	// Attempts counts requests sent.
	Attempts int `json:"attempts"`
	// Statuses counts the answers before success (0: transport error).
	Statuses map[int]int `json:"statuses"`
}

// CredentialsPrefix starts every IMDS credential document kube2ra serves
// (EC2's layout: a field a line).
const CredentialsPrefix = "{\n  \"Code\" : \"Success\""

// credentialsPrefix is CredentialsPrefix as bytes.
var credentialsPrefix = []byte(CredentialsPrefix)

// errNoCredentials is a 200 without a credential document.
var errNoCredentials = errors.New("answered 200 without a credential document")

// FirstRequest polls until it reads a credential document. started is
// written "started\n" once the first request is on the wire, so the caller
// knows the pod is asking before it sets the pod's IP.
func FirstRequest(ctx context.Context, o FirstRequestOptions, started io.Writer) (FirstRequestResult, error) {
	if o.Retry <= 0 {
		o.Retry = 2 * time.Millisecond
	}
	res := FirstRequestResult{Statuses: map[int]int{}}
	req := BuildRequest("GET", o.Path)
	var conn *Conn
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for {
		if ctx.Err() != nil || time.Now().After(o.Deadline) {
			return res, fmt.Errorf("no credentials after %d attempts (answers %v)", res.Attempts, res.Statuses)
		}
		if conn == nil || conn.c == nil {
			c, err := Dial(o.Addr, dialTimeout)
			if err != nil {
				res.Statuses[0]++
				time.Sleep(o.Retry)
				continue
			}
			conn = c
		}
		start := time.Now()
		if err := conn.c.SetDeadline(o.Deadline); err != nil {
			return res, err
		}
		if _, err := conn.c.Write(req); err != nil {
			_ = conn.Close()
			res.Statuses[0]++
			time.Sleep(o.Retry)
			continue
		}
		res.Attempts++
		if res.Attempts == 1 {
			res.StartedUnixNano = start.UnixNano()
			if started != nil {
				_, _ = io.WriteString(started, "started\n")
			}
		}
		resp, err := conn.read()
		now := time.Now()
		switch {
		case err != nil:
			_ = conn.Close()
			res.Statuses[0]++
		case resp.Status == 200 && bytes.HasPrefix(resp.Body, credentialsPrefix):
			res.OKUnixNano = now.UnixNano()
			res.LastRequest = now.Sub(start)
			return res, nil
		case resp.Status == 200:
			return res, errNoCredentials
		default:
			res.Statuses[resp.Status]++
		}
		time.Sleep(o.Retry)
	}
}
