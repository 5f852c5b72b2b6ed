package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flatten turns a JSON object into dotted paths -> values (arrays by
// index), so a case can name the OCSF fields it expects.
func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, e, out)
		}
	case []any:
		for i, e := range x {
			flatten(prefix+"["+strconv.Itoa(i)+"]", e, out)
		}
	default:
		out[prefix] = v
	}
}

func ocsfFields(t *testing.T, r *Record, seq uint64) map[string]any {
	t.Helper()
	line, err := appendOCSF(nil, r, seq)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(line), "}\n") || strings.Count(string(line), "\n") != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var v map[string]any
	if err := json.Unmarshal(line, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	flatten("", v, out)
	return out
}

var ocsfTime = time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC)

// TestOCSFMapping: each kind of record, field by field. want values are
// JSON-decoded (numbers float64); absent lists fields that must not be
// there.
func TestOCSFMapping(t *testing.T) {
	const spiffe = "spiffe://mesh.local/ns/default/sa/planner"
	cases := []struct {
		name   string
		rec    Record
		want   map[string]any
		absent []string
	}{
		{
			name: "allow POST",
			rec: Record{Kind: KindDecision, Time: ocsfTime, Process: "p1", DecisionID: "d1", RequestID: "r1", Principal: spiffe,
				Method: "POST", Host: "executor.mesh.local", Path: "/v1/tasks", Rule: "planner-tasks", Decision: "allow", Reason: "allowed",
				Status: 200, PolicyRevision: "rev9", Roles: []string{"planner"}, Latency: 1500},
			want: map[string]any{
				"class_uid": 6003.0, "class_name": "API Activity", "category_uid": 6.0, "category_name": "Application Activity",
				"activity_id": 1.0, "activity_name": "Create", "type_uid": 600301.0, "type_name": "API Activity: Create",
				"time": float64(ocsfTime.UnixMilli()), "severity_id": 1.0, "severity": "Informational",
				"status_id": 1.0, "status": "Success", "status_code": "200", "status_detail": "allowed",
				"action_id": 1.0, "action": "Allowed", "disposition_id": 1.0, "disposition": "Allowed",
				"metadata.version": OCSFVersion, "metadata.product.name": "meshward", "metadata.product.vendor_name": "meshward",
				"metadata.profiles[0]": "security_control", "metadata.uid": "d1", "metadata.correlation_uid": "r1",
				"metadata.event_code": KindDecision, "metadata.log_name": "audit", "metadata.sequence": 7.0,
				"actor.user.uid": spiffe, "actor.authorizations[0].decision": "allow",
				"actor.authorizations[0].policy.name": "planner-tasks", "actor.authorizations[0].policy.uid": "rev9",
				"api.operation": "POST", "api.request.uid": "d1", "api.response.code": 200.0, "api.service.name": "executor.mesh.local",
				"http_request.http_method": "POST", "http_request.uid": "r1", "http_request.url.hostname": "executor.mesh.local",
				"http_request.url.path": "/v1/tasks", "src_endpoint.uid": spiffe, "dst_endpoint.hostname": "executor.mesh.local",
				"unmapped.process": "p1", "unmapped.roles[0]": "planner", "unmapped.latency_ns": 1500.0,
			},
			absent: []string{"api.response.error", "unmapped.dry_run", "http_request.url.query_string", "message"},
		},
		{
			name: "deny by policy, GET with a query",
			rec: Record{Kind: KindAuthzDenial, Time: ocsfTime, Principal: spiffe, Method: "GET", Host: "svc", Path: "/a?b=1",
				Decision: "deny", Reason: "missing_role", Status: 403},
			want: map[string]any{
				"activity_id": 2.0, "activity_name": "Read", "type_uid": 600302.0, "severity_id": 3.0, "severity": "Medium",
				"status_id": 2.0, "status": "Failure", "status_code": "403", "status_detail": "missing_role",
				"action_id": 2.0, "action": "Denied", "disposition_id": 2.0, "disposition": "Blocked",
				"api.response.error": "missing_role", "api.response.code": 403.0, "metadata.event_code": KindAuthzDenial,
				"http_request.url.path": "/a", "http_request.url.query_string": "b=1", "actor.authorizations[0].decision": "deny",
			},
			absent: []string{"actor.authorizations[0].policy", "metadata.uid"},
		},
		{
			name: "authn failure without a principal, DELETE",
			rec:  Record{Kind: KindAuthnFailure, Time: ocsfTime, Method: "DELETE", Path: "/x", Decision: "deny", Reason: "missing_identity", Status: 401},
			want: map[string]any{"activity_id": 4.0, "activity_name": "Delete", "status_code": "401", "action": "Denied",
				"metadata.event_code": KindAuthnFailure, "status_detail": "missing_identity"},
			absent: []string{"actor.user", "src_endpoint.uid"},
		},
		{
			name: "MCP tool call with schema violations",
			rec: Record{Kind: KindAuthzDenial, Time: ocsfTime, Principal: spiffe, Method: "POST", Host: "tools", Path: "/mcp",
				JSONRPCMethod: "tools/call", JSONRPCID: "7", MCPTool: "search", JSONRPCBatch: 2, Decision: "deny",
				Reason: "invalid_tool_arguments", Status: 400, Violations: []string{"/params/arguments/q"}},
			want: map[string]any{"activity_id": 99.0, "activity_name": "Other", "type_uid": 600399.0,
				"api.operation": "tools/call search", "api.group.name": "mcp", "unmapped.jsonrpc_id": "7",
				"unmapped.jsonrpc_batch": 2.0, "unmapped.violations[0]": "/params/arguments/q"},
		},
		{
			name: "error decision, unknown method, dry run and redacted fields kept as given",
			rec: Record{Kind: KindDecision, Time: ocsfTime, Principal: spiffe, Method: "PROPFIND", Decision: "error", Reason: "deadline_exceeded",
				Status: 403, DryRun: true, Subject: "hmac-sha256:ab", Headers: map[string]string{"x-patient-id": "hmac-sha256:cd"},
				Claims: map[string]any{"email": "hmac-sha256:ef"}},
			want: map[string]any{"activity_id": 99.0, "status_id": 2.0, "action": "Denied", "severity_id": 3.0,
				"actor.authorizations[0].decision": "error", "unmapped.dry_run": true, "unmapped.subject": "hmac-sha256:ab",
				"unmapped.headers.x-patient-id": "hmac-sha256:cd", "unmapped.claims.email": "hmac-sha256:ef"},
		},
		{
			name: "security event: Base Event",
			rec: Record{Kind: KindAgentQuarantined, Time: ocsfTime, Process: "p1", Message: "agent quarantined",
				Detail: map[string]string{"spiffe_id": spiffe, "by": "detector"}},
			want: map[string]any{"class_uid": 0.0, "class_name": "Base Event", "category_uid": 0.0, "category_name": "Uncategorized",
				"activity_id": 99.0, "type_uid": 99.0, "severity_id": 4.0, "severity": "High", "message": "agent quarantined",
				"metadata.event_code": KindAgentQuarantined, "unmapped.detail.by": "detector", "unmapped.detail.spiffe_id": spiffe},
			absent: []string{"metadata.profiles[0]", "api.operation", "action_id", "status_id", "http_request.http_method"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ocsfFields(t, &tc.rec, 7)
			for k, w := range tc.want {
				if g, ok := got[k]; !ok || g != w {
					t.Errorf("%s = %#v (present %v), want %#v", k, g, ok, w)
				}
			}
			for _, k := range tc.absent {
				for g := range got {
					if g == k || strings.HasPrefix(g, k+".") {
						t.Errorf("%s present: %v", g, got[g])
					}
				}
			}
			// Required by the classes: API Activity needs actor, api,
			// src_endpoint; every event class, time and metadata.
			for _, k := range []string{"class_uid", "category_uid", "activity_id", "type_uid", "time", "severity_id", "metadata.version", "metadata.product.name"} {
				if _, ok := got[k]; !ok {
					t.Errorf("required %s missing", k)
				}
			}
			if tc.rec.Kind != KindAgentQuarantined {
				for _, k := range []string{"api.operation", "actor.authorizations[0].decision"} {
					if _, ok := got[k]; !ok {
						t.Errorf("required %s missing", k)
					}
				}
			}
		})
	}
}

// TestOCSFSinks: an ocsf file sink beside a json file sink gets the same
// records, redacted, as OCSF events numbered 1, 2, 3 with no header or
// seal lines (not chained, not encrypted), while the json file is chained
// and encrypted as configured.
func TestOCSFSinks(t *testing.T) {
	dir := t.TempDir()
	jsonPath, ocsfPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.ocsf.json")
	cfg := Config{
		Sinks:     []SinkConfig{{Type: "file", Path: jsonPath}, {Type: "file", Path: ocsfPath, Format: FormatOCSF}},
		Redaction: Redaction{Headers: []string{"x-patient-id"}},
	}
	l := start(t, cfg, WithEncryptionKey(make([]byte, 32)))
	l.waitReady(t, nil)
	for i := range 3 {
		r := decision(i)
		r.Headers = map[string]string{"x-patient-id": "patient-42", "authorization": "Bearer abc.def.ghi"}
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(ocsfPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "patient-42") || strings.Contains(string(raw), "abc.def.ghi") {
		t.Fatalf("ocsf sink has unredacted values:\n%s", raw)
	}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	n := 0
	for sc.Scan() {
		n++
		var e ocsfEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d: %v: %s", n, err, sc.Bytes())
		}
		if e.ClassUID != ocsfClassAPIActivity || e.Metadata.Sequence != uint64(n) || e.API.Request.UID != "d"+strconv.Itoa(n-1) {
			t.Errorf("line %d: class %d seq %d request %+v", n, e.ClassUID, e.Metadata.Sequence, e.API.Request)
		}
		if !strings.HasPrefix(e.Unmapped["headers"].(map[string]any)["x-patient-id"].(string), "hmac-sha256:") {
			t.Errorf("line %d: header not redacted: %v", n, e.Unmapped["headers"])
		}
	}
	if n != 3 {
		t.Fatalf("ocsf file has %d lines, want 3 (no header or seal lines):\n%s", n, raw)
	}
	// The json file is still chained, sealed and encrypted.
	rep, err := VerifyFilesWith(VerifyOptions{EncryptionKey: make([]byte, 32)}, jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 3 || rep.Encrypted != 3 || rep.Segments != 1 || len(rep.Problems) > 0 {
		t.Fatalf("json file: %+v", rep)
	}
}

// TestOCSFFailClosed: a failing ocsf sink turns the logger unhealthy and
// decisions are refused, as for any sink; when it writes again the held
// events follow with no gap.
func TestOCSFFailClosed(t *testing.T) {
	w := &flakyWriter{}
	l := start(t, Config{Sinks: []SinkConfig{{Type: "stdout", Format: FormatOCSF}}}, WithStdout(w))
	l.waitReady(t, nil)
	w.failing.Store(true)
	if err := l.Audit(decision(1)); err != nil {
		t.Fatal(err)
	}
	l.waitReady(t, ErrUnhealthy)
	if err := l.Audit(decision(2)); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Audit while failing = %v, want ErrUnhealthy", err)
	}
	w.failing.Store(false)
	l.waitReady(t, nil)
	if err := l.Audit(decision(3)); err != nil {
		t.Fatal(err)
	}
	if err := l.stop(); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	out := w.buf.String()
	w.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (the held one and the one after):\n%s", len(lines), out)
	}
	for i, ln := range lines {
		var e ocsfEvent
		if err := json.Unmarshal([]byte(ln), &e); err != nil {
			t.Fatal(err)
		}
		if e.Metadata.Sequence != uint64(i+1) {
			t.Errorf("line %d: sequence %d", i, e.Metadata.Sequence)
		}
	}
}

func TestOCSFConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		sink SinkConfig
		want string
	}{
		"ocsf on otlp":   {SinkConfig{Type: "otlp", Endpoint: "c:4317", Format: FormatOCSF}, "format: an otlp sink"},
		"unknown format": {SinkConfig{Type: "stdout", Format: "cef"}, `format: must be json or ocsf, not "cef"`},
		"ocsf file":      {SinkConfig{Type: "file", Path: "/x", Format: FormatOCSF}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			c := Config{Sinks: []SinkConfig{tc.sink}}
			c.SetDefaults()
			err := c.Validate("audit")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "audit.sinks[0]."+tc.want) {
				t.Fatalf("err = %v, want audit.sinks[0].%s", err, tc.want)
			}
		})
	}
}
