// Package bench measures kube2ra the way issue 10 asks: a load generator
// that runs inside pod network namespaces, a bare net/http baseline behind
// the same DNAT rule, cold-start, readiness, memory and upstream-cost
// figures, and a report (table, BENCH lines, JSON). The orchestrating
// program is test/bench/cmd; this package holds the parts it and its
// in-pod subcommands share.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// subBucketBits sets the histogram's precision: 2^7 linear sub-buckets per
// power of two bound the relative error of a recorded value by 1/128
// (under 0.8 %), exact enough for p50/p99/p999 of latencies.
const subBucketBits = 7

// subBuckets is the number of linear sub-buckets per power of two.
const subBuckets = 1 << subBucketBits

// bucketCount covers every uint64 value.
const bucketCount = (64 - subBucketBits + 1) * subBuckets

// Histogram is a log-linear bucket histogram of durations in nanoseconds,
// in the spirit of HdrHistogram: values below 256 ns are exact, larger ones
// fall in buckets whose width is under 1/128 of their value. The zero value
// is ready to use; it is not safe for concurrent use (keep one per
// goroutine and Merge).
type Histogram struct {
	// counts holds one counter per bucket, allocated on first Record.
	counts []uint64
	// total is the number of recorded values.
	total uint64
	// min and max are the exact extremes recorded.
	min, max uint64
	// sum is the exact sum of recorded values, for the mean.
	sum float64
}

// bucketOf is the index of v's bucket.
func bucketOf(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	shift := bits.Len64(v) - subBucketBits - 1
	return (shift+1)*subBuckets + int(v>>uint(shift)) - subBuckets
}

// bucketBounds is the inclusive value range of bucket i.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*subBuckets {
		return uint64(i), uint64(i)
	}
	shift := uint(i/subBuckets - 1)
	lo = uint64(i%subBuckets+subBuckets) << shift
	return lo, lo + (uint64(1) << shift) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	if h.counts == nil {
		h.counts = make([]uint64, bucketCount)
	}
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.total == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, bucketCount)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.total += o.total
	h.sum += o.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Min is the smallest recorded value (0 when empty).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest recorded value (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the exact mean (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile is the value at quantile q (0..1) by nearest rank: the middle of
// the bucket holding the ceil(q·n)-th smallest value, clamped to the exact
// minimum and maximum. It is 0 when the histogram is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// histogramJSON is the wire form: only non-empty buckets, as [index, count].
type histogramJSON struct {
	Buckets [][2]uint64 `json:"buckets"`
	Count   uint64      `json:"count"`
	Min     uint64      `json:"min"`
	Max     uint64      `json:"max"`
	Sum     float64     `json:"sum"`
}

// MarshalJSON writes the sparse wire form, so a load generator in a pod can
// hand its histogram to the orchestrator for merging.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	out := histogramJSON{Buckets: [][2]uint64{}, Count: h.total, Min: h.min, Max: h.max, Sum: h.sum}
	for i, c := range h.counts {
		if c != 0 {
			out.Buckets = append(out.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads the wire form, checking that it is consistent.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var in histogramJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*h = Histogram{}
	var n uint64
	for _, bc := range in.Buckets {
		if bc[0] >= bucketCount {
			return fmt.Errorf("histogram bucket index %d is out of range (max %d): the producer uses another layout", bc[0], bucketCount-1)
		}
		if h.counts == nil {
			h.counts = make([]uint64, bucketCount)
		}
		h.counts[bc[0]] += bc[1]
		n += bc[1]
	}
	if n != in.Count {
		return fmt.Errorf("histogram buckets hold %d values but count says %d", n, in.Count)
	}
	h.total, h.min, h.max, h.sum = in.Count, in.Min, in.Max, in.Sum
	return nil
}
