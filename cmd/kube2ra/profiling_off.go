//go:build !pprof

package main

import (
	"context"

	"github.com/sirupsen/logrus"
)

// startProfiling does nothing: only a build with -tags pprof (make bench's
// BENCH_PROFILE) links the profiler in.
func startProfiling(context.Context, logrus.FieldLogger) error { return nil }
