package policy

import (
	"strconv"
	"testing"
	"time"
)

// With maxBuckets callers tracked, a new caller is denied (fail closed)
// until buckets have refilled and can be dropped.
func TestQuotaBucketBound(t *testing.T) {
	q := &quota{name: "q", all: true, perTok: time.Hour, burst: 1, buckets: map[string]*bucket{}}
	now := time.Unix(0, 0)
	for i := range maxBuckets {
		if ok, _ := q.take("spiffe://mesh.local/c/"+strconv.Itoa(i), now); !ok {
			t.Fatalf("caller %d denied", i)
		}
	}
	if ok, wait := q.take("spiffe://mesh.local/new", now); ok || wait != time.Hour {
		t.Fatalf("caller beyond the bound: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := q.take("spiffe://mesh.local/c/7", now); ok {
		t.Fatal("a tracked caller got a second token")
	}
	now = now.Add(time.Hour)
	if ok, _ := q.take("spiffe://mesh.local/new", now); !ok {
		t.Fatal("refilled buckets were not dropped for a new caller")
	}
	if n := len(q.buckets); n != 1 {
		t.Fatalf("%d buckets after the sweep, want 1", n)
	}
}
