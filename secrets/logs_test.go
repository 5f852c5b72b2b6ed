package secrets

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// outageSource fails everything while down, as an unreachable Vault does,
// and serves one generic secret.
type outageSource struct {
	*LocalCA
	down atomic.Bool
}

var errOutage = errors.New("source unreachable")

func (o *outageSource) IssueSVID(ctx context.Context, id string) (*SVID, error) {
	if o.down.Load() {
		return nil, errOutage
	}
	return o.LocalCA.IssueSVID(ctx, id)
}

func (o *outageSource) Bundle(ctx context.Context) (*Bundle, error) {
	if o.down.Load() {
		return nil, errOutage
	}
	return o.LocalCA.Bundle(ctx)
}

func (o *outageSource) Secret(context.Context, string) ([]byte, error) {
	if o.down.Load() {
		return nil, errOutage
	}
	return []byte("value"), nil
}

func (o *outageSource) SecretNames() []string { return []string{"api-key"} }

// syncLog is a log buffer safe across goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *syncLog) has(s string) bool           { return strings.Contains(l.String(), s) }

// TestManagerLogsWhatIsServed: the log says what is served through an
// outage: nothing before anything was issued (not "the last good one"),
// the last good material after, "expired" once it has; recovery is logged
// at info; readiness says "expired" rather than "10 % of its life left".
func TestManagerLogsWhatIsServed(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	clock := &fakeClock{t: time.Now()}
	t0 := clock.now()
	ca, err := NewLocalCA(LocalConfig{}, time.Hour, WithClock(clock.now))
	if err != nil {
		t.Fatal(err)
	}
	src := &outageSource{LocalCA: ca}
	src.down.Store(true)
	logs := &syncLog{}
	m := NewManager(src, WithClock(clock.now), WithBackoff(time.Millisecond, 5*time.Millisecond), WithPollInterval(10*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	const id = testTD + "a"
	if err := m.Register(id); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)

	// Down from the start: nothing was ever issued or fetched.
	for _, want := range []string{
		"certificate issuance failed: none issued yet for this ID",
		"trust bundle poll failed: no bundle yet",
		"secret poll failed: no value yet",
	} {
		eventually(t, ctx, want, func() bool { return logs.has(want) })
	}
	if logs.has("last good") {
		t.Fatalf("a last good value is claimed before any was served:\n%s", logs)
	}

	// Back: each recovery is logged at info.
	src.down.Store(false)
	clock.set(t0.Add(time.Second)) // past the retry the last failure scheduled
	m.poke()
	eventually(t, ctx, "ready", func() bool { return m.Ready() == nil })
	for _, want := range []string{
		`level=INFO msg="certificate issued again after failures"`,
		`level=INFO msg="trust bundle poll succeeded again"`,
		`level=INFO msg="secret poll succeeded again"`,
	} {
		eventually(t, ctx, want, func() bool { return logs.has(want) })
	}

	// Down again: the last good material is served, then it expires.
	src.down.Store(true)
	clock.set(t0.Add(40 * time.Minute)) // past the renewal point
	m.poke()
	for _, want := range []string{
		"certificate issuance failed: serving the last good one",
		"trust bundle poll failed: serving the last good one",
		"secret poll failed: serving the last good value",
	} {
		eventually(t, ctx, want, func() bool { return logs.has(want) })
	}
	clock.set(t0.Add(61 * time.Minute))
	m.poke()
	eventually(t, ctx, "an expiry warning", func() bool { return logs.has("the certificate served for this ID has expired") })
	err = m.Ready()
	if err == nil || !strings.Contains(err.Error(), "expired at") || strings.Contains(err.Error(), "life left") {
		t.Fatalf("Ready after expiry = %v, want it to say expired", err)
	}
}
