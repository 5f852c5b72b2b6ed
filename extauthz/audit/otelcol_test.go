package audit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"

	"github.com/meshward/meshward/extauthz/audit/otelcoltest"
)

// The tests in this file send to a real OpenTelemetry Collector (built by
// `make otelcol`, MESHWARD_OTELCOL_BIN) and read back what its file
// exporter wrote; otlp_test.go keeps the in-process receiver for what a
// collector cannot be made to do on demand (fail one export).

func otlpConfig(endpoint string) Config {
	return Config{Sinks: []SinkConfig{{Type: "otlp", Endpoint: endpoint, Insecure: true, Timeout: Duration(2 * time.Second)}}}
}

// bodyRecord decodes a received log record's body, the record's JSON line.
func bodyRecord(t *testing.T, lr *logspb.LogRecord) Record {
	t.Helper()
	var rec Record
	if err := json.Unmarshal([]byte(lr.GetBody().GetStringValue()), &rec); err != nil {
		t.Fatalf("body %q: %v", lr.GetBody(), err)
	}
	return rec
}

// TestOTLPCollectorDelivery: what docs/audit.md promises of an otlp sink
// arrives at a real collector: one log record per audit record, the
// redacted JSON line as body (decision, reason, identity, request and
// security-event fields), event name = kind, timestamp = time, severity,
// and the resource.
func TestOTLPCollectorDelivery(t *testing.T) {
	col := otelcoltest.Start(t)
	cfg := otlpConfig(col.Endpoint)
	cfg.Redaction.Headers = []string{"x-patient-id"}
	l := start(t, cfg)
	l.waitReady(t, nil)

	at := time.Date(2026, 12, 3, 7, 0, 0, 123456789, time.UTC)
	allow := &Record{Kind: KindDecision, Time: at, DecisionID: "d-allow", RequestID: "req-1",
		Principal: "spiffe://mesh.local/agent/planner", Subject: "alice", Roles: []string{"reader"},
		Method: "GET", Host: "tasks", Path: "/v1/tasks", Rule: "read-tasks", Decision: "allow", Reason: "allowed", Status: 200,
		PolicyRevision: "rev-7", Headers: map[string]string{"x-patient-id": "p-4711", "x-tenant": "acme"},
		Claims: map[string]any{"email": "alice@example.com"}}
	deny := &Record{Kind: KindDecision, Time: at.Add(time.Millisecond), DecisionID: "d-deny",
		Principal: "spiffe://mesh.local/agent/intruder", Method: "POST", Host: "tasks", Path: "/v1/admin",
		Decision: "deny", Reason: "missing_role", Status: 403, JSONRPCMethod: "tools/call", MCPTool: "delete_all"}
	event := &Record{Kind: KindXDSNack, Time: at.Add(2 * time.Millisecond), Node: "envoy-1",
		Type: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Message: "bad cluster", Detail: map[string]string{"version": "42"}}
	for _, r := range []*Record{allow, deny, event} {
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	got := col.WaitReceived(t, 3)
	if len(got) != 3 {
		t.Fatalf("collector wrote %d log records, want 3", len(got))
	}

	tests := []struct {
		name     string
		want     *Record
		sevText  string
		severity logspb.SeverityNumber
	}{
		{"allow", allow, "INFO", logspb.SeverityNumber_SEVERITY_NUMBER_INFO},
		{"deny", deny, "WARN", logspb.SeverityNumber_SEVERITY_NUMBER_WARN},
		{"security event", event, "WARN", logspb.SeverityNumber_SEVERITY_NUMBER_WARN},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lg := got[i]
			lr := lg.Record
			if lr.GetEventName() != tc.want.Kind {
				t.Errorf("event name %q, want %q", lr.GetEventName(), tc.want.Kind)
			}
			if lr.GetTimeUnixNano() != uint64(tc.want.Time.UnixNano()) { //nolint:gosec // G115: a 2026 time is positive
				t.Errorf("timestamp %d, want %d (the record's time)", lr.GetTimeUnixNano(), tc.want.Time.UnixNano())
			}
			if lr.GetObservedTimeUnixNano() == 0 {
				t.Error("no observed timestamp")
			}
			if lr.GetSeverityText() != tc.sevText || lr.GetSeverityNumber() != tc.severity {
				t.Errorf("severity %q %v, want %q %v", lr.GetSeverityText(), lr.GetSeverityNumber(), tc.sevText, tc.severity)
			}
			if lg.Resource["service.name"] != "meshward" || lg.Resource["meshward.audit.process"] != l.Process() {
				t.Errorf("resource %v", lg.Resource)
			}
			rec := bodyRecord(t, lr)
			want := *tc.want
			want.Seq, want.Process = uint64(i+1), l.Process() //nolint:gosec // G115: i is 0..2
			if tc.want == allow {
				// x-patient-id is redacted; the rest arrives as audited.
				if h := rec.Headers["x-patient-id"]; !strings.HasPrefix(h, "hmac-sha256:") {
					t.Errorf("x-patient-id = %q, want an hmac-sha256 digest", h)
				}
				if strings.Contains(lr.GetBody().GetStringValue(), "p-4711") {
					t.Error("the redacted header's value reached the collector")
				}
				want.Headers = map[string]string{"x-patient-id": rec.Headers["x-patient-id"], "x-tenant": "acme"}
			}
			wantJSON, _ := json.Marshal(want)
			gotJSON, _ := json.Marshal(rec)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("body\n got %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

// TestOTLPCollectorStoppedMidRun: when the collector stops, the next
// export fails, the logger turns unhealthy and (failClosed) refuses
// records, counted as lost "unhealthy"; the record whose export failed is
// held. When a collector is back on the endpoint the held record is
// exported once, the logger is ready again, and the sequence has no gap
// and no duplicate across the two collector runs.
func TestOTLPCollectorStoppedMidRun(t *testing.T) {
	col := otelcoltest.Start(t)
	reg := prometheus.NewRegistry()
	l := start(t, otlpConfig(col.Endpoint), WithRegisterer(reg))
	l.waitReady(t, nil)
	for i := range 3 {
		if err := l.Audit(decision(i)); err != nil {
			t.Fatal(err)
		}
	}
	col.WaitReceived(t, 3)

	col.Stop()
	if err := l.Audit(decision(3)); err != nil { // accepted: the logger is still healthy
		t.Fatal(err)
	}
	l.waitReady(t, ErrUnhealthy)
	if err := l.Audit(decision(99)); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Audit while the collector is down = %v, want ErrUnhealthy", err)
	}
	if v := metricValue(t, reg, "meshward_audit_records_lost_total", "reason", LostUnhealthy); v != 1 {
		t.Errorf("records lost (unhealthy) = %v, want 1", v)
	}
	if v := metricValue(t, reg, "meshward_audit_healthy"); v != 0 {
		t.Errorf("meshward_audit_healthy = %v while the collector is down, want 0", v)
	}

	restarted := time.Now()
	col.Restart()
	l.waitReady(t, nil)
	t.Logf("ready again %v after the collector was restarted", time.Since(restarted).Round(time.Millisecond))
	if err := l.Audit(decision(4)); err != nil {
		t.Fatal(err)
	}
	col.WaitReceived(t, 5)
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	// After the stop: nothing more (no duplicate) arrived.
	got, _ := col.Received()
	if len(got) != 5 {
		t.Fatalf("collector wrote %d log records over two runs, want 5 (the held one once, the refused one never)", len(got))
	}
	for i, lg := range got {
		rec := bodyRecord(t, lg.Record)
		if rec.Seq != uint64(i+1) || rec.DecisionID != decision(i).DecisionID { //nolint:gosec // G115: i is 0..4
			t.Errorf("log record %d: seq %d decision_id %q, want %d %q", i, rec.Seq, rec.DecisionID, i+1, decision(i).DecisionID)
		}
	}
}

// TestOTLPCollectorDownAtStart: the sink connects lazily, so a logger
// whose collector is not up yet starts; its first export fails and it is
// unhealthy until the collector is up, then delivers what it held.
func TestOTLPCollectorDownAtStart(t *testing.T) {
	col := otelcoltest.Start(t)
	col.Stop()
	l := start(t, otlpConfig(col.Endpoint))
	if err := l.Audit(decision(0)); err != nil {
		t.Fatal(err)
	}
	l.waitReady(t, ErrUnhealthy)
	if err := l.Audit(decision(1)); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Audit while the collector is down = %v, want ErrUnhealthy", err)
	}
	col.Restart()
	l.waitReady(t, nil)
	got := col.WaitReceived(t, 1)
	if rec := bodyRecord(t, got[0].Record); len(got) != 1 || rec.Seq != 1 || rec.DecisionID != "d0" {
		t.Errorf("received %d records, first %+v", len(got), rec)
	}
}

// TestOTLPCollectorTLS: to a collector serving TLS with a generated
// certificate, the sink delivers when caFile holds the CA that signed it;
// with another CA, with the system roots (the default) or in plaintext the
// handshake fails, nothing arrives and the logger turns unhealthy.
func TestOTLPCollectorTLS(t *testing.T) {
	pki := otelcoltest.GenerateTLS(t)
	other := otelcoltest.GenerateTLS(t)
	col := otelcoltest.Start(t, otelcoltest.WithTLS(pki.CertFile, pki.KeyFile))
	tests := []struct {
		name      string
		caFile    string
		insecure  bool
		delivered bool
	}{
		{name: "caFile: the collector's CA", caFile: pki.CAFile, delivered: true},
		{name: "caFile: another CA", caFile: other.CAFile},
		{name: "system roots"},
		{name: "plaintext to a TLS collector", insecure: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := col.Received()
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Sinks: []SinkConfig{{Type: "otlp", Endpoint: col.Endpoint, Insecure: tc.insecure, CAFile: tc.caFile, Timeout: Duration(2 * time.Second)}}}
			l := start(t, cfg)
			if err := l.Audit(decision(0)); err != nil {
				t.Fatal(err)
			}
			if !tc.delivered {
				l.waitReady(t, ErrUnhealthy)
				if got, _ := col.Received(); len(got) != len(before) {
					t.Errorf("the collector received %d records over a connection that should have failed", len(got)-len(before))
				}
				return
			}
			got := col.WaitReceived(t, len(before)+1)
			if rec := bodyRecord(t, got[len(before)].Record); rec.Process != l.Process() || rec.DecisionID != "d0" {
				t.Errorf("received %+v", rec)
			}
			l.waitReady(t, nil)
		})
	}
}
