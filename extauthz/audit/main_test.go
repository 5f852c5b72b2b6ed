package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(killChildEnv) != "" {
		killChild() // never returns
	}
	goleak.VerifyTestMain(m)
}

// withRetry sets how often failing sinks are retried (tests).
func withRetry(d time.Duration) Option { return func(o *options) { o.retry = d } }

// withMaxBytes overrides the file sinks' maxSizeMB (tests).
func withMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

var testKey = []byte("0123456789abcdef-test-key")

// running is a Logger whose Run goroutine the test owns.
type running struct {
	*Logger
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start builds a Logger and runs it until the test ends (or stop).
func start(t *testing.T, cfg Config, opts ...Option) *running {
	t.Helper()
	l, err := New(cfg, append([]Option{WithHMACKey(testKey), withRetry(10 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	r := &running{Logger: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop ends Run and returns its error (Run has flushed when it returns).
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

// waitReady waits until Ready returns want (nil or an error matched with
// errors.Is), or fails the test when Run ends first or after a deadline.
func (r *running) waitReady(t *testing.T, want error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.Ready()
		if (want == nil && got == nil) || (want != nil && errors.Is(got, want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready() = %v, want %v", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func fileConfig(path string) Config {
	return Config{Sinks: []SinkConfig{{Type: "file", Path: path}}}
}

func tempLog(t *testing.T) string { return filepath.Join(t.TempDir(), "audit.log") }

func decision(i int) *Record {
	return &Record{Kind: KindDecision, DecisionID: "d" + strconv.Itoa(i), Principal: "spiffe://mesh.local/agent/" + strconv.Itoa(i%3),
		Method: "GET", Host: "svc", Path: "/v1/tasks", Decision: "allow", Status: 200}
}

// metricValue reads one sample from a registry: name and label pairs.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

// flakyWriter fails every write while failing is set.
type flakyWriter struct {
	failing atomic.Bool
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.failing.Load() {
		return 0, errors.New("disk on fire")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	return w.buf.Write(p)
}

func (w *flakyWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.buf.Bytes())
}
