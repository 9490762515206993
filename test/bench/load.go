package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// LoadOptions describe one load run of one process (one pod).
type LoadOptions struct {
	// Addr is host:port to connect to (169.254.169.254:80 from a pod).
	Addr string `json:"addr"`
	// Path is the request path.
	Path string `json:"path"`
	// Conns is the number of keep-alive connections, each a closed loop.
	Conns int `json:"conns"`
	// Token makes every connection fetch an IMDSv2 token first and send it,
	// as the AWS SDKs do.
	Token bool `json:"token"`
	// Start is when every process begins sending (a shared wall-clock
	// instant, so the measured windows of all pods line up).
	Start time.Time `json:"start"`
	// Warmup is sent but not recorded.
	Warmup time.Duration `json:"warmup"`
	// Duration is the measured window after Warmup.
	Duration time.Duration `json:"duration"`
	// RatePerConn paces each connection to that many requests per second;
	// 0 sends the next request as soon as the answer is in (closed loop).
	RatePerConn float64 `json:"ratePerConn"`
	// Timeout bounds one request.
	Timeout time.Duration `json:"timeout"`
	// Expect, when set, must be a prefix of every 200 body (a sanity check
	// that the right thing answered, e.g. CredentialsPrefix).
	Expect string `json:"expect"`
	// AuthorizationFiles, when set, maps a pod IP to its ServiceAccount
	// token file: every connection sends the token of the address it
	// connected from as the Authorization header, as an SDK on the token
	// door does. One options value then serves every pod.
	AuthorizationFiles map[string]string `json:"authorizationFiles,omitempty"`
}

// LoadResult is what one load run measured in its window.
type LoadResult struct {
	// OK counts 200 answers to requests started inside the window.
	OK uint64 `json:"ok"`
	// Errors counts failures (transport errors and non-200) in the window.
	Errors uint64 `json:"errors"`
	// Statuses counts every status seen in the window (0: transport error).
	Statuses map[int]uint64 `json:"statuses"`
	// Seconds is the window length.
	Seconds float64 `json:"seconds"`
	// Latency holds the latency of every 200 in the window.
	Latency *Histogram `json:"latency"`
	// FirstError describes the first failure, if any.
	FirstError string `json:"firstError,omitempty"`
}

// RPS is successful requests per second in the window.
func (r LoadResult) RPS() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.OK) / r.Seconds
}

// Merge adds another process's result measured over the same window.
func (r *LoadResult) Merge(o LoadResult) {
	r.OK += o.OK
	r.Errors += o.Errors
	if r.Statuses == nil {
		r.Statuses = map[int]uint64{}
	}
	for k, v := range o.Statuses {
		r.Statuses[k] += v
	}
	r.Seconds = max(r.Seconds, o.Seconds)
	if r.Latency == nil {
		r.Latency = &Histogram{}
	}
	r.Latency.Merge(o.Latency)
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
}

// dialTimeout bounds connecting; the target is on the same machine.
const dialTimeout = 2 * time.Second

// RunLoad drives Conns connections until Start+Warmup+Duration and returns
// what was measured in the window [Start+Warmup, Start+Warmup+Duration).
func RunLoad(ctx context.Context, o LoadOptions) (LoadResult, error) {
	if o.Conns < 1 || o.Duration <= 0 || o.Addr == "" || o.Path == "" {
		return LoadResult{}, errors.New("bench: load needs an address, a path, at least one connection and a duration")
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	measureFrom := o.Start.Add(o.Warmup)
	end := measureFrom.Add(o.Duration)
	results := make([]LoadResult, o.Conns)
	var wg sync.WaitGroup
	for i := range o.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runConn(ctx, o, measureFrom, end)
		}()
	}
	wg.Wait()
	total := LoadResult{Statuses: map[int]uint64{}, Latency: &Histogram{}}
	for _, r := range results {
		total.Merge(r)
	}
	total.Seconds = o.Duration.Seconds()
	return total, nil
}

// runConn is one closed-loop (or paced) connection.
func runConn(ctx context.Context, o LoadOptions, measureFrom, end time.Time) LoadResult {
	res := LoadResult{Statuses: map[int]uint64{}, Latency: &Histogram{}}
	fail := func(status int, err error) {
		res.Errors++
		res.Statuses[status]++
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	expect := []byte(o.Expect)
	var conn *Conn
	var req []byte
	connect := func() error {
		c, err := Dial(o.Addr, dialTimeout)
		if err != nil {
			return err
		}
		if len(o.AuthorizationFiles) > 0 {
			tok, err := c.authorizationToken(o.AuthorizationFiles)
			if err != nil {
				_ = c.Close()
				return err
			}
			req = BuildRequest("GET", o.Path, "Authorization", tok)
		} else if o.Token {
			tok, err := c.Token(time.Now().Add(o.Timeout))
			if err != nil {
				_ = c.Close()
				return fmt.Errorf("fetching an IMDSv2 token: %w", err)
			}
			req = BuildRequest("GET", o.Path, tokenHeader, tok)
		} else {
			req = BuildRequest("GET", o.Path)
		}
		conn = c
		return nil
	}
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	if err := connect(); err != nil {
		fail(0, err)
		return res
	}
	// Connections open before the start, so dialling is not measured.
	if wait := time.Until(o.Start); wait > 0 {
		select {
		case <-ctx.Done():
			return res
		case <-time.After(wait):
		}
	}
	var interval time.Duration
	if o.RatePerConn > 0 {
		interval = time.Duration(float64(time.Second) / o.RatePerConn)
	}
	next := time.Now()
	for ctx.Err() == nil {
		if interval > 0 {
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait)
			}
			next = next.Add(interval)
		}
		start := time.Now()
		if !start.Before(end) {
			break
		}
		measured := !start.Before(measureFrom)
		if conn == nil || conn.c == nil {
			if err := connect(); err != nil {
				if measured {
					fail(0, err)
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		resp, err := conn.Do(req, start.Add(o.Timeout))
		lat := time.Since(start)
		switch {
		case err != nil:
			_ = conn.Close()
			if measured {
				fail(0, err)
			}
		case resp.Status != 200:
			if measured {
				fail(resp.Status, fmt.Errorf("answered %d: %.100q", resp.Status, resp.Body))
			}
		case len(expect) > 0 && !bytes.HasPrefix(resp.Body, expect):
			if measured {
				fail(resp.Status, fmt.Errorf("answered 200 with an unexpected body starting %.40q", resp.Body))
			}
		case measured:
			res.OK++
			res.Statuses[200]++
			res.Latency.Record(lat)
		}
	}
	return res
}
