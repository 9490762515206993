package bench

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketBoundsContainTheirValues(t *testing.T) {
	values := []uint64{0, 1, 127, 128, 255, 256, 257, 511, 512, 1000, 123456, 1 << 40, math.MaxUint64}
	for _, v := range values {
		i := bucketOf(v)
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if i >= bucketCount {
			t.Errorf("value %d maps to bucket %d beyond %d", v, i, bucketCount)
		}
		if v >= subBuckets && float64(hi-lo) > float64(lo)/subBuckets {
			t.Errorf("bucket %d [%d, %d] is wider than 1/%d of its value", i, lo, hi, subBuckets)
		}
	}
	// Buckets tile the line: each starts right after the previous one ends.
	for i := 1; i < 5*subBuckets; i++ {
		_, prevHi := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, prevHi)
		}
	}
}

func TestQuantilesMatchExactOrderStatisticsWithinBucketError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	var exact []time.Duration
	for range 100000 {
		// Log-normal-ish latencies from ~20 µs to tens of ms.
		d := time.Duration(math.Exp(rng.NormFloat64()*1.2+11) + 1)
		h.Record(d)
		exact = append(exact, d)
	}
	slices.Sort(exact)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := exact[int(math.Ceil(q*float64(len(exact))))-1]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 1.0/subBuckets {
			t.Errorf("p%v = %v, exact %v (relative error %.4f)", q*100, got, want, rel)
		}
	}
	if h.Min() != exact[0] || h.Max() != exact[len(exact)-1] {
		t.Errorf("min/max %v/%v, exact %v/%v", h.Min(), h.Max(), exact[0], exact[len(exact)-1])
	}
}

func TestMergeAndJSONRoundTripKeepEveryValue(t *testing.T) {
	var a, b Histogram
	for i := 1; i <= 1000; i++ {
		a.Record(time.Duration(i) * time.Microsecond)
		b.Record(time.Duration(i) * time.Millisecond)
	}
	raw, err := json.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	a.Merge(&back)
	if a.Count() != 2000 {
		t.Fatalf("count %d, want 2000", a.Count())
	}
	if a.Min() != time.Microsecond || a.Max() != time.Second {
		t.Fatalf("min/max %v/%v", a.Min(), a.Max())
	}
	// The median of 1..1000 µs and 1..1000 ms is between 1 ms and 1000 µs.
	if p50 := a.Quantile(0.5); p50 < 990*time.Microsecond || p50 > 1010*time.Microsecond {
		t.Fatalf("p50 %v, want about 1 ms", p50)
	}
}

func TestUnmarshalRefusesInconsistentCounts(t *testing.T) {
	var h Histogram
	err := json.Unmarshal([]byte(`{"buckets":[[3,2]],"count":5,"min":3,"max":3,"sum":6}`), &h)
	if err == nil {
		t.Fatal("inconsistent histogram accepted")
	}
	err = json.Unmarshal([]byte(`{"buckets":[[99999999,1]],"count":1}`), &h)
	if err == nil {
		t.Fatal("out-of-range bucket accepted")
	}
}

func TestEmptyHistogramAnswersZero(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatal("empty histogram is not all zero")
	}
}
