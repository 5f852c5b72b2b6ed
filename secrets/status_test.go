package secrets

import (
	"errors"
	"testing"
	"time"
)

// TestCertificates: one row per registered ID, sorted; the life left and
// the low-life flag follow the clock as Ready does; a failing issuance
// shows its error on the row while the last good certificate stays.
func TestCertificates(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	clock := &fakeClock{t: time.Now()}
	t0 := clock.now()
	ca, err := NewLocalCA(LocalConfig{}, time.Hour, WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	src := &flakySource{LocalCA: ca}
	m := NewManager(src, WithClock(clock.now), WithBackoff(time.Millisecond, 5*time.Millisecond))
	const a, b = testTD + "b", testTD + "a"
	if err := m.Register(a, b); err != nil {
		t.Fatal(err)
	}
	if got := m.Certificates(); len(got) != 2 || !got[0].NotAfter.IsZero() {
		t.Fatalf("before Run: %+v, want two rows without a certificate", got)
	}
	runManager(t, m)
	eventually(t, ctx, "ready", func() bool { return m.Ready() == nil })

	got := m.Certificates()
	if len(got) != 2 || got[0].ID != b || got[1].ID != a {
		t.Fatalf("rows %+v, want %s then %s", got, b, a)
	}
	c := got[0]
	if c.NotAfter.Sub(c.Issued).Round(time.Minute) != time.Hour || c.LifeLeft < 0.99 || c.LowLife || c.NextIssue.IsZero() {
		t.Fatalf("fresh certificate: %+v", c)
	}

	src.down.Store(true)
	clock.set(t0.Add(55 * time.Minute))
	m.poke()
	eventually(t, ctx, "a failed retry", func() bool { return m.Certificates()[0].Failures > 0 })
	c = m.Certificates()[0]
	if !c.LowLife || c.LifeLeft > 0.1 || c.LastError == "" {
		t.Fatalf("5 of 60 minutes left, source down: %+v", c)
	}
	if err := m.Ready(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("Ready = %v; the page and readiness must agree", err)
	}
}
