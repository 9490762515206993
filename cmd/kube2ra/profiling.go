//go:build pprof

package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
)

// profilingAddrEnv names the loopback address a profiling build serves
// net/http/pprof on (make bench's BENCH_PROFILE builds one with -tags
// pprof). Release builds have no profiler linked in at all.
const profilingAddrEnv = "KUBE2RA_PPROF_ADDR"

// memProfileRateEnv sets runtime.MemProfileRate in a profiling build: the
// bytes allocated between two heap profile samples (Go's default 512 KiB
// makes each line of a small agent's heap profile one sample; 4096 counts
// its informers' objects).
const memProfileRateEnv = "KUBE2RA_MEMPROFILERATE"

func init() {
	if v, err := strconv.Atoi(os.Getenv(memProfileRateEnv)); err == nil && v > 0 {
		runtime.MemProfileRate = v
	}
}

// startProfiling serves /debug/pprof/ on $KUBE2RA_PPROF_ADDR, a loopback
// address, until ctx ends.
func startProfiling(ctx context.Context, log logrus.FieldLogger) error {
	addr := os.Getenv(profilingAddrEnv)
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errors.New(profilingAddrEnv + " must be a loopback host:port")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	log.WithField("addr", ln.Addr().String()).Warn("profiling build: net/http/pprof is served")
	return nil
}
