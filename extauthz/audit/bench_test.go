package audit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func benchRecord() Record {
	return Record{Kind: KindDecision, DecisionID: "01JD5Q8W2X3Y4Z5A6B7C8D9E0F", RequestID: "b7c1f0e2-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
		Principal: "spiffe://mesh.local/ns/agents/sa/planner", Subject: "alice", Roles: []string{"planner", "reader"},
		Method: "POST", Host: "tasks.mesh.local", Path: "/v1/tasks", Rule: "planner-posts-tasks", Decision: "allow",
		Reason: "rule_matched", Status: 200, PolicyRevision: "r42", Latency: 41 * time.Microsecond,
		Headers: map[string]string{"authorization": "Bearer abcdefghijklmnop", "x-request-id": "b7c1f0e2"},
		Claims:  map[string]any{"email": "alice@example.org", "dept": "ops"}}
}

func benchLogger(b *testing.B, cfg Config, opts ...Option) (*Logger, func()) {
	b.Helper()
	cfg.Redaction.Claims = []string{"email"}
	l, err := New(cfg, append([]Option{WithHMACKey(testKey), WithStdout(io.Discard)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for l.Ready() != nil {
		runtime.Gosched()
	}
	return l, func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkAudit is the cost on the Check path. "enqueue": Audit alone,
// with the queue drained by a goroutine that discards (slower than the
// producer, so lost/op shows how many calls took the queue-full path,
// which costs about the same). "file": the real
// writer to a file, with a record allocated per call as the caller does;
// records refused because the writer fell behind are reported as lost/op.
func BenchmarkAudit(b *testing.B) {
	b.Run("enqueue", func(b *testing.B) {
		l, err := New(Config{}, WithHMACKey(testKey))
		if err != nil {
			b.Fatal(err)
		}
		stop := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case <-l.queue:
				case <-stop:
					return
				}
			}
		}()
		// Records are made beforehand: their allocation is the caller's.
		const ring = 1 << 16
		recs := make([]Record, ring)
		for i := range recs {
			recs[i] = benchRecord()
			recs[i].Time = time.Now()
		}
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			l.Audit(&recs[n%ring])
			n++
		}
		close(stop)
		<-drained
		b.ReportMetric(testutil.ToFloat64(l.m.lostBy[LostQueueFull])/float64(n), "lost/op")
	})
	b.Run("file", func(b *testing.B) {
		f := false
		cfg := Config{FailClosed: &f, Sinks: []SinkConfig{{Type: "file", Path: b.TempDir() + "/audit.log", Fsync: FsyncInterval}}}
		l, stop := benchLogger(b, cfg)
		tmpl := benchRecord()
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			r := tmpl
			l.Audit(&r)
			n++
		}
		b.StopTimer()
		stop()
		b.ReportMetric(testutil.ToFloat64(l.m.lostBy[LostQueueFull])/float64(n), "lost/op")
	})
}

// BenchmarkFileSink is the writer's throughput: records redacted, encoded
// and written to a file per second, by fsync policy, producers waiting
// when the queue is full.
func BenchmarkFileSink(b *testing.B) {
	type variant struct {
		name, fsync string
		opts        []Option
	}
	keys := []Option{WithSealKey(sealKey), WithEncryptionKey(encKey)}
	for _, v := range []variant{{"fsync=batch", FsyncBatch, nil}, {"fsync=interval", FsyncInterval, nil}, {"fsync=never", FsyncNever, nil},
		{"fsync=interval,sealed+encrypted", FsyncInterval, keys}} {
		b.Run(v.name, func(b *testing.B) {
			path := b.TempDir() + "/audit.log"
			l, stop := benchLogger(b, Config{Sinks: []SinkConfig{{Type: "file", Path: path, Fsync: v.fsync}}}, v.opts...)
			tmpl := benchRecord()
			n := 0
			start := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				r := tmpl
				for errors.Is(l.Audit(&r), ErrQueueFull) {
					runtime.Gosched()
				}
				n++
			}
			stop() // flushed: every record is in the file
			el := time.Since(start)
			b.ReportMetric(float64(n)/el.Seconds(), "records/s")
			if got := testutil.ToFloat64(l.m.written.WithLabelValues("file:" + path)); int(got) != n {
				b.Errorf("written %v, want %d", got, n)
			}
		})
	}
}

// BenchmarkFrame is the writer's CPU per record for the chain: stamping
// seq and prev and hashing the line, and with encryption AES-256-GCM and
// base64 too.
func BenchmarkFrame(b *testing.B) {
	l, err := New(Config{}, WithHMACKey(testKey), WithStdout(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	l.red = newRedactor(&l.cfg, testKey)
	r := benchRecord()
	line, _ := l.encode(&r)
	line = bytes.Clone(line)
	at := bytes.Index(line, []byte(seqPlaceholder))
	for _, enc := range []bool{false, true} {
		name := "chained"
		fs := &fileSink{}
		if enc {
			name = "chained+encrypted"
			aead, err := segmentKey(encKey, make([]byte, 16))
			if err != nil {
				b.Fatal(err)
			}
			fs.enc = &encrypter{aead: aead}
		}
		b.Run(name, func(b *testing.B) {
			var buf []byte
			seq := uint64(0)
			b.ReportAllocs()
			for b.Loop() {
				seq++
				buf = fs.frame(buf[:0], line, at, seq)
			}
			b.ReportMetric(float64(len(buf)), "bytes/line")
		})
	}
}

// BenchmarkEncode is the writer's CPU per record: redaction and JSON.
func BenchmarkEncode(b *testing.B) {
	cfg := Config{Redaction: Redaction{Claims: []string{"email"}}}
	l, err := New(cfg, WithHMACKey(testKey), WithStdout(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	l.red = newRedactor(&l.cfg, testKey)
	tmpl := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		r := tmpl
		l.encode(&r)
	}
}
