package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// TestAppendRecordMatchesEncodingJSON holds the hand-written encoder to
// what encoding/json writes for the same Record.
func TestAppendRecordMatchesEncodingJSON(t *testing.T) {
	evil := "a\"b\\c\x00\x01\x1f\x7f<>&\b\f\n\r\t\u2028\u2029\xff\xfe é 漢 😀"
	tests := []struct {
		name    string
		rec     Record
		wantErr bool
	}{
		{name: "minimal", rec: Record{Kind: KindDecision}},
		{name: "full decision", rec: benchRecord()},
		{name: "every field", rec: Record{Kind: evil, Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), Seq: 9, Process: "p",
			DecisionID: evil, RequestID: "r", Principal: "p", Subject: "s", Roles: []string{evil, ""}, Method: "m", Host: "h",
			Path: "/" + evil, Query: "q", Rule: "r", JSONRPCMethod: evil, JSONRPCID: "7", MCPTool: "t", JSONRPCBatch: 2, Quota: "q",
			Decision: "deny", Reason: "why", Status: 403, DryRun: true,
			Violations: []string{"/a", "/b"}, PolicyRevision: "r1", Latency: -5, Headers: map[string]string{evil: evil, "b": "", "a": "x"},
			Claims: map[string]any{"n": 1.5, "tiny": 1e-7, "big": 1e21, "neg": math.Copysign(0, -1), "int": 3, "i64": int64(-4), "b": true, "nil": nil,
				"arr": []any{"x", 2.0, []any{}}, "strs": []string{"a"}, "m": map[string]any{evil: evil}, "other": map[string]int{"z": 1, "a": 2}},
			Body: []any{map[string]any{}}, Node: "n", Type: "t", Message: evil, Detail: map[string]string{"k": evil}}},
		{name: "typed nil body", rec: Record{Kind: "k", Body: map[string]any(nil)}},
		{name: "NaN claim", rec: Record{Kind: "k", Claims: map[string]any{"x": math.NaN()}}, wantErr: true},
		{name: "year 10000", rec: Record{Kind: "k", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, werr := json.Marshal(&tc.rec)
			got, gerr := appendRecord(nil, &tc.rec)
			if (gerr != nil) != tc.wantErr || (werr != nil) != tc.wantErr {
				t.Fatalf("errors: appendRecord %v, encoding/json %v, want error %v", gerr, werr, tc.wantErr)
			}
			if !tc.wantErr && !bytes.Equal(got, want) {
				t.Errorf("appendRecord:\n%s\nencoding/json:\n%s", got, want)
			}
		})
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\u2028b", "\xff\x00<&>", "é漢😀\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec := Record{Kind: s, Headers: map[string]string{s: s}, Claims: map[string]any{s: []any{s}}}
		want, err := json.Marshal(&rec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := appendRecord(nil, &rec)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendRecord %q (%v), encoding/json %q", got, err, want)
		}
	})
}
