package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// The functions below are the bodies of the benchmark program's
// subcommands, which run inside pod (or node) network namespaces: each
// reads its options as one JSON value on stdin and writes its result as
// JSON on stdout. Secrets never appear in arguments (visible in ps).

// LoadgenMain runs RunLoad.
func LoadgenMain() error {
	var o LoadOptions
	if err := json.NewDecoder(os.Stdin).Decode(&o); err != nil {
		return fmt.Errorf("reading load options from stdin: %w", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	res, err := RunLoad(ctx, o)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// FirstRequestMain runs FirstRequest, writing "started" then the result.
func FirstRequestMain() error {
	var o FirstRequestOptions
	if err := json.NewDecoder(os.Stdin).Decode(&o); err != nil {
		return fmt.Errorf("reading first-request options from stdin: %w", err)
	}
	res, err := FirstRequest(context.Background(), o, os.Stdout)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// FetchOptions describe one request whose whole answer is wanted.
type FetchOptions struct {
	// Addr is host:port.
	Addr string `json:"addr"`
	// Path is the request path.
	Path string `json:"path"`
	// Token sends an IMDSv2 token first.
	Token bool `json:"token"`
	// AuthorizationFiles sends a ServiceAccount token, as LoadOptions does.
	AuthorizationFiles map[string]string `json:"authorizationFiles,omitempty"`
	// Timeout bounds the request.
	Timeout time.Duration `json:"timeout"`
}

// FetchMain makes one request and prints the Response (the orchestrator
// needs kube2ra's exact bytes for the baseline).
func FetchMain() error {
	var o FetchOptions
	if err := json.NewDecoder(os.Stdin).Decode(&o); err != nil {
		return fmt.Errorf("reading fetch options from stdin: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	deadline := time.Now().Add(o.Timeout)
	c, err := Dial(o.Addr, o.Timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	req := BuildRequest("GET", o.Path)
	switch {
	case len(o.AuthorizationFiles) > 0:
		tok, err := c.authorizationToken(o.AuthorizationFiles)
		if err != nil {
			return err
		}
		req = BuildRequest("GET", o.Path, "Authorization", tok)
	case o.Token:
		tok, err := c.Token(deadline)
		if err != nil {
			return err
		}
		req = BuildRequest("GET", o.Path, tokenHeader, tok)
	}
	resp, err := c.Do(req, deadline)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(resp)
}

// BaselineMain serves the baseline until SIGTERM; it prints "listening"
// once bound.
func BaselineMain() error {
	var o BaselineOptions
	if err := json.NewDecoder(bufio.NewReader(os.Stdin)).Decode(&o); err != nil {
		return fmt.Errorf("reading baseline options from stdin: %w", err)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	srv := NewBaselineServer(o)
	fmt.Println("listening")
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	go func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
