package audit

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// receiver is an OTLP gRPC logs receiver in process, speaking the
// collector's protocol (opentelemetry-proto's LogsService), as the SDK's
// own exporter tests do.
type receiver struct {
	collogspb.UnimplementedLogsServiceServer
	failing  atomic.Bool
	mu       sync.Mutex
	recs     []*logspb.LogRecord
	resource map[string]string
}

func (r *receiver) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if r.failing.Load() {
		return nil, status.Error(codes.Unavailable, "collector down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		r.resource = map[string]string{}
		for _, kv := range rl.GetResource().GetAttributes() {
			r.resource[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, sl := range rl.GetScopeLogs() {
			r.recs = append(r.recs, sl.GetLogRecords()...)
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (r *receiver) records() []*logspb.LogRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*logspb.LogRecord(nil), r.recs...)
}

func startReceiver(t *testing.T) (*receiver, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &receiver{}
	g := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(g, rcv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return rcv, lis.Addr().String()
}

func waitRecords(t *testing.T, r *receiver, n int) []*logspb.LogRecord {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.records()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d records, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOTLPSink: records reach a real OTLP gRPC receiver in batches, one
// log record each, with the JSON line as body; while the receiver fails,
// the logger is unhealthy and refuses records (fail closed), and the held
// records arrive once, in order, when it is back.
func TestOTLPSink(t *testing.T) {
	rcv, addr := startReceiver(t)
	cfg := Config{Sinks: []SinkConfig{{Type: "otlp", Endpoint: addr, Insecure: true, Timeout: Duration(2 * time.Second)}}}
	l := start(t, cfg)
	l.waitReady(t, nil)
	for i := range 5 {
		r := decision(i)
		if i == 4 {
			r.Decision, r.Status = "deny", 403
		}
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	got := waitRecords(t, rcv, 5)
	for i, lr := range got {
		var rec Record
		if err := json.Unmarshal([]byte(lr.GetBody().GetStringValue()), &rec); err != nil {
			t.Fatalf("body %q: %v", lr.GetBody(), err)
		}
		if rec.DecisionID != "d"+strconv.Itoa(i) || rec.Seq != uint64(i+1) || lr.GetEventName() != KindDecision || lr.GetTimeUnixNano() == 0 {
			t.Errorf("record %d: %+v event %q", i, rec, lr.GetEventName())
		}
		wantSev := "INFO"
		if i == 4 {
			wantSev = "WARN"
		}
		if lr.GetSeverityText() != wantSev {
			t.Errorf("record %d severity %q, want %s", i, lr.GetSeverityText(), wantSev)
		}
	}
	if rcv.resource["service.name"] != "meshward" || rcv.resource["meshward.audit.process"] != l.Process() {
		t.Errorf("resource %v", rcv.resource)
	}

	rcv.failing.Store(true)
	if err := l.Audit(decision(5)); err != nil {
		t.Fatal(err)
	}
	l.waitReady(t, ErrUnhealthy)
	if err := l.Audit(decision(6)); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Audit while the receiver fails = %v, want ErrUnhealthy", err)
	}
	rcv.failing.Store(false)
	l.waitReady(t, nil)
	waitRecords(t, rcv, 6)
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	got = rcv.records()
	if len(got) != 6 {
		t.Fatalf("%d records after recovery, want 6 (the held one once)", len(got))
	}
	var last Record
	_ = json.Unmarshal([]byte(got[5].GetBody().GetStringValue()), &last)
	if last.DecisionID != "d5" || last.Seq != 6 {
		t.Errorf("held record %+v", last)
	}
}

func TestLineKindTime(t *testing.T) {
	k, ts := lineKindTime([]byte(`{"kind":"xds_nack","time":"2026-12-02T10:00:00.5Z","seq":1}`))
	if k != KindXDSNack || !ts.Equal(time.Date(2026, 12, 2, 10, 0, 0, 5e8, time.UTC)) {
		t.Errorf("%q %v", k, ts)
	}
	if k, ts := lineKindTime([]byte(`garbage`)); k != "" || !ts.IsZero() {
		t.Errorf("%q %v", k, ts)
	}
}

// TestOTLPSinkCAFile: a caFile that cannot be read or holds no certificate
// fails New (the logger does not start with a sink it cannot verify).
func TestOTLPSinkCAFile(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, caFile, want string }{
		{"missing", filepath.Join(dir, "absent.pem"), "read caFile"},
		{"no certificate", notPEM, "holds no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Sinks: []SinkConfig{{Type: "otlp", Endpoint: "127.0.0.1:4317", CAFile: tc.caFile}}}, WithHMACKey(testKey))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
