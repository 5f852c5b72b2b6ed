package extauthz

import (
	"sync"
	"sync/atomic"
)

// cowMap is a read-mostly cache: readers load an immutable map with one
// atomic load (no shared writes, so no cache-line traffic between cores on
// the hot path); writers copy it. When it holds max entries it starts
// over, which bounds memory whatever the keys.
type cowMap[K comparable, V any] struct {
	max int
	mu  sync.Mutex
	m   atomic.Pointer[map[K]V]
}

func (c *cowMap[K, V]) get(k K) (V, bool) {
	if m := c.m.Load(); m != nil {
		v, ok := (*m)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

func (c *cowMap[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	n := 1
	if old != nil && len(*old) < c.max {
		n += len(*old)
	}
	m := make(map[K]V, n)
	if old != nil && len(*old) < c.max {
		for ok, ov := range *old {
			m[ok] = ov
		}
	}
	m[k] = v
	c.m.Store(&m)
}
