package audit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTapSeesRedactedRecords: the tap gets every written record after
// redaction (a credential header arrives as its HMAC, never in clear),
// in order, and a record the logger refused never reaches it.
func TestTapSeesRedactedRecords(t *testing.T) {
	var mu sync.Mutex
	var seen []Record
	tap := func(r *Record) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, *r)
	}
	w := &flakyWriter{}
	l := start(t, Config{}, WithStdout(w), WithTap(tap))
	l.waitReady(t, nil)
	const token = "Bearer abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range 3 {
		r := decision(i)
		r.Decision, r.Reason, r.Headers = "deny", "missing_role", map[string]string{"authorization": token}
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	if err := l.Audit(decision(9)); err == nil {
		t.Fatal("Audit after stop accepted a record")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("tap saw %d records, want 3", len(seen))
	}
	for i, r := range seen {
		if r.DecisionID != decision(i).DecisionID || r.Process == "" || r.Time.Location() != time.UTC {
			t.Errorf("record %d: %+v, want d%d stamped by the logger", i, r, i)
		}
		if h := r.Headers["authorization"]; !strings.HasPrefix(h, HMACPrefix) || strings.Contains(h, "abcdefgh") {
			t.Errorf("record %d: authorization %q reached the tap unredacted", i, h)
		}
	}
	if strings.Contains(string(w.bytes()), "abcdefgh") {
		t.Error("the sink wrote the credential")
	}
}
