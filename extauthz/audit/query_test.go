package audit

import (
	"testing"
	"time"
)

func TestQuery(t *testing.T) {
	line := []byte(`{"kind":"decision","time":"2026-12-01T10:00:00Z","seq":1,"process":"p","principal":"spiffe://mesh.local/ns/a/sa/planner",` +
		`"subject":"alice","decision":"deny","reason":"missing_role","mcp_tool":"delete_repo","jsonrpc_method":"tools/call"}`)
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		q    Query
		want bool
	}{
		{name: "no filter", q: Query{}, want: true},
		{name: "principal exact", q: Query{Principal: "spiffe://mesh.local/ns/a/sa/planner"}, want: true},
		{name: "principal other", q: Query{Principal: "spiffe://mesh.local/ns/a/sa/viewer"}, want: false},
		{name: "principal wildcard across slashes", q: Query{Principal: "spiffe://mesh.local/*/planner"}, want: true},
		{name: "principal wildcard no match", q: Query{Principal: "*viewer"}, want: false},
		{name: "decision", q: Query{Decision: "deny"}, want: true},
		{name: "decision other", q: Query{Decision: "allow"}, want: false},
		{name: "reason wildcard", q: Query{Reason: "missing_*"}, want: true},
		{name: "kind", q: Query{Kind: KindAuthzDenial}, want: false},
		{name: "subject", q: Query{Subject: "alice"}, want: true},
		{name: "tool", q: Query{Tool: "delete_repo"}, want: true},
		{name: "tool by JSON-RPC method", q: Query{Tool: "tools/*"}, want: true},
		{name: "tool other", q: Query{Tool: "read_repo"}, want: false},
		{name: "since: inclusive", q: Query{Since: at}, want: true},
		{name: "since: later", q: Query{Since: at.Add(time.Second)}, want: false},
		{name: "until: exclusive", q: Query{Until: at}, want: false},
		{name: "until: later", q: Query{Until: at.Add(time.Second)}, want: true},
		{name: "all at once", q: Query{Principal: "*planner", Decision: "deny", Reason: "missing_role", Tool: "delete_repo", Since: at.Add(-time.Hour), Until: at.Add(time.Hour)}, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, got := tc.q.Match(line)
			if got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
			if r == nil || r.Principal != "spiffe://mesh.local/ns/a/sa/planner" || !r.Time.Equal(at) {
				t.Errorf("record %+v", r)
			}
		})
	}
	if _, ok := (&Query{}).Match([]byte("not json")); ok {
		t.Error("a line that is not JSON matched")
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{{"a*a", "a", false}, {"a*a", "aa", true}, {"*", "", true}, {"a**b", "ab", true}, {"*b*", "abc", true}, {"x", "xy", false}} {
		if got := glob(tc.p, tc.s); got != tc.want {
			t.Errorf("glob(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
