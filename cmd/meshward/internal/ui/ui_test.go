package ui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

type fakeNodes []xds.NodeStatus

func (f fakeNodes) Status() []xds.NodeStatus { return f }
func (f fakeNodes) NACKs() map[string]map[string]xds.NACKStatus {
	out := map[string]map[string]xds.NACKStatus{}
	for _, n := range f {
		if n.LastNACK != nil {
			out[n.Node] = map[string]xds.NACKStatus{n.LastNACK.Type: *n.LastNACK}
		}
	}
	return out
}

type fakeCerts []secrets.CertStatus

func (f fakeCerts) Certificates() []secrets.CertStatus { return f }

type fakePolicy struct {
	rev     string
	reloads []policy.ReloadResult
}

func (f fakePolicy) RevisionID() string             { return f.rev }
func (f fakePolicy) Reloads() []policy.ReloadResult { return f.reloads }

type fakeQuarantine []Quarantined

func (f fakeQuarantine) Quarantined() []Quarantined { return f }

func (f fakeQuarantine) Problem() (string, time.Time) { return "", time.Time{} }

// brokenQuarantine is a state file that does not load.
type brokenQuarantine struct {
	fakeQuarantine
	msg   string
	since time.Time
}

func (b brokenQuarantine) Problem() (string, time.Time) { return b.msg, b.since }

func newMux(src Sources) *http.ServeMux {
	mux := http.NewServeMux()
	Register(mux, src)
	return mux
}

func get(t *testing.T, h http.Handler, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Result()
}

func getJSON(t *testing.T, h http.Handler, path string, v any) {
	t.Helper()
	resp := get(t, h, path)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("GET %s: Cache-Control %q, want no-store", path, cc)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// TestPageAndAssets: the page, its script and stylesheet are served from
// the embedded files with the CSP and the other headers; the HTML loads
// nothing from elsewhere and has no inline script or style.
func TestPageAndAssets(t *testing.T) {
	mux := newMux(Sources{})
	tests := []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html", `<script src="app.js" defer></script>`},
		{"/ui/app.js", "text/javascript", "textContent"},
		{"/ui/style.css", "text/css", "--bad"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp := get(t, mux, tc.path)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
				t.Fatalf("%d %q, want 200 %s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.ctype)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			for k, want := range map[string]string{"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if !strings.HasPrefix(CSP, "default-src 'self'") {
				t.Errorf("CSP %q does not start with default-src 'self'", CSP)
			}
			if tc.ctype == "text/html" {
				for _, bad := range []string{"http://", "https://", "<script>", "style=", "onload", "onclick"} {
					if strings.Contains(string(body), bad) {
						t.Errorf("page contains %q", bad)
					}
				}
			}
		})
	}
	resp := get(t, mux, "/ui")
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = get(t, mux, "/ui/nope.js")
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/ui/nope.js: %d, want 404", resp.StatusCode)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/api/denies", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/api/denies: %d, want 405 (the page is read-only)", rec.Code)
	}
}

// TestEndpointsDisabled: with no sources (components not running) every
// endpoint answers enabled=false with empty lists, never null.
func TestEndpointsDisabled(t *testing.T) {
	mux := newMux(Sources{})
	for _, path := range []string{"nodes", "certificates", "policy", "decisions", "denies", "quarantine"} {
		t.Run(path, func(t *testing.T) {
			var m map[string]any
			getJSON(t, mux, "/ui/api/"+path, &m)
			if m["enabled"] != false {
				t.Errorf("enabled = %v, want false", m["enabled"])
			}
			for k, v := range m {
				if v == nil {
					t.Errorf("%s is null; the page expects a list", k)
				}
			}
		})
	}
}

// TestEndpoints: each endpoint serves what its source reports.
func TestEndpoints(t *testing.T) {
	ring := NewDenyRing(0)
	ring.Tap(&audit.Record{Kind: audit.KindAuthzDenial, Time: t0, DecisionID: "d1", Principal: "spiffe://mesh.local/ns/default/sa/viewer",
		Method: "POST", Host: "executor.mesh.local", Path: "/v1/tasks", Decision: "deny", Reason: "missing_role", Status: 403,
		Headers: map[string]string{"authorization": audit.HMACPrefix + "00"}})
	src := Sources{
		Now: func() time.Time { return t0 },
		Nodes: fakeNodes{{Node: "planner", Streams: 1, Since: t0, Versions: map[string]string{"cluster": "v1"},
			Acked: map[string]xds.AckStatus{"cluster": {Version: "v1", At: t0}}, LastNACK: &xds.NACKStatus{Type: "listener", Version: "v0", Message: "bad"}}},
		Certificates: fakeCerts{{ID: "spiffe://mesh.local/ns/default/sa/planner", NotAfter: t0.Add(time.Hour), LifeLeft: 0.05, LowLife: true}},
		Policy:       fakePolicy{rev: "abc", reloads: []policy.ReloadResult{{At: t0, Result: "failure", Revision: "abc", Error: "bad rule"}}},
		Denies:       ring,
		Decisions:    NewRates(prometheus.NewRegistry()),
		Quarantine: fakeQuarantine{
			{SPIFFEID: "spiffe://mesh.local/ns/default/sa/viewer", Agents: []string{"viewer"}, Reason: "leaked key", By: "alice", At: t0},
			{SPIFFEID: "spiffe://mesh.local/ns/default/sa/gone", By: "bob", At: t0}, // no agent has it
		},
		QuarantineFile: "/var/lib/meshward/quarantine.json",
	}
	mux := newMux(src)

	var nodes NodesResponse
	getJSON(t, mux, "/ui/api/nodes", &nodes)
	if !nodes.Enabled || len(nodes.Nodes) != 1 || nodes.Nodes[0].Acked["cluster"].Version != "v1" || nodes.Nodes[0].LastNACK.Message != "bad" || nodes.NACKs["planner"]["listener"].Message != "bad" {
		t.Errorf("nodes: %+v", nodes)
	}
	var certs CertificatesResponse
	getJSON(t, mux, "/ui/api/certificates", &certs)
	if !certs.Enabled || !certs.Now.Equal(t0) || len(certs.Certificates) != 1 || !certs.Certificates[0].LowLife {
		t.Errorf("certificates: %+v", certs)
	}
	var pol PolicyResponse
	getJSON(t, mux, "/ui/api/policy", &pol)
	if !pol.Enabled || pol.Revision != "abc" || len(pol.Reloads) != 1 || pol.Reloads[0].Error != "bad rule" {
		t.Errorf("policy: %+v", pol)
	}
	var den DeniesResponse
	getJSON(t, mux, "/ui/api/denies", &den)
	if !den.Enabled || den.Capacity != DefaultDenies || len(den.Denies) != 1 || den.Denies[0].Reason != "missing_role" || den.Denies[0].DecisionID != "d1" {
		t.Errorf("denies: %+v", den)
	}
	resp := get(t, mux, "/ui/api/denies")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "authorization") {
		t.Errorf("denies carry headers: %s", body)
	}
	var q QuarantineResponse
	getJSON(t, mux, "/ui/api/quarantine", &q)
	if !q.Enabled || q.File != "/var/lib/meshward/quarantine.json" || len(q.Quarantined) != 2 ||
		q.Quarantined[0].Agents[0] != "viewer" || q.Quarantined[0].Reason != "leaked key" || q.Quarantined[0].By != "alice" || !q.Quarantined[0].At.Equal(t0) {
		t.Errorf("quarantine: %+v", q)
	}
	resp = get(t, mux, "/ui/api/quarantine")
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"agents":[]`) {
		t.Errorf("an identity no agent has: agents should be [], never null: %s", body)
	}
	if strings.Contains(string(body), `"errorSince"`) || q.Error != "" {
		t.Errorf("a file that loads shown with an error: %s", body)
	}
	// A file that does not load: the error and since when, beside the
	// last good state.
	bsrc := src
	bsrc.Quarantine = brokenQuarantine{fakeQuarantine: src.Quarantine.(fakeQuarantine), msg: "quarantine: /var/lib/meshward/quarantine.json: unexpected EOF", since: t0}
	q = QuarantineResponse{}
	getJSON(t, newMux(bsrc), "/ui/api/quarantine", &q)
	if q.Error != "quarantine: /var/lib/meshward/quarantine.json: unexpected EOF" || q.ErrorSince == nil || !q.ErrorSince.Equal(t0) || len(q.Quarantined) != 2 {
		t.Errorf("quarantine with a broken file: %+v", q)
	}
	var dec DecisionsResponse
	getJSON(t, mux, "/ui/api/decisions", &dec)
	if !dec.Enabled || dec.IntervalSeconds != 10 || dec.WindowSeconds != 3600 || len(dec.Results) != 4 {
		t.Errorf("decisions: %+v", dec)
	}
}
