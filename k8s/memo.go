package k8s

import "sync"

// boundedMemo memoises a value per key for the lookup path: readers share
// a read lock, a miss builds the value outside any lock and stores it
// unless another caller stored one first (then every caller gets the same
// value). Past bound entries it starts over: what it holds is only ever a
// cache of what build gives, so forgetting costs a rebuild, never an
// answer. The zero value is ready.
type boundedMemo[K comparable, V any] struct {
	// mu guards m.
	mu sync.RWMutex
	// m holds the values built so far.
	m map[K]V
}

// get returns k's value, building it with build on first use; bound is
// the most values held.
func (c *boundedMemo[K, V]) get(k K, bound int, build func(K) V) V {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = build(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.m[k]; ok {
		return have
	}
	if c.m == nil || len(c.m) >= bound {
		c.m = make(map[K]V)
	}
	c.m[k] = v
	return v
}

// forget drops k's value.
func (c *boundedMemo[K, V]) forget(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

// forgetIf drops every value drop says to.
func (c *boundedMemo[K, V]) forgetIf(drop func(K, V) bool) {
	c.mu.Lock()
	for k, v := range c.m {
		if drop(k, v) {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// size is the number of values held.
func (c *boundedMemo[K, V]) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
