// Package ui is the read-only status page the admin server serves at
// /ui/: connected Envoys, certificates, the policy revision, decision
// rates, the last denies and the quarantined agents, from small interfaces the page reads and
// cmd/meshward wires. Its assets are embedded; the page runs no inline
// script and loads nothing from elsewhere (CSP default-src 'self').
package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"time"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// Nodes is what the page reads from the xDS server: the connected nodes,
// and each one's last NACK by type.
type Nodes interface {
	Status() []xds.NodeStatus
	NACKs() map[string]map[string]xds.NACKStatus
}

// Certificates is what the page reads from the secrets manager.
type Certificates interface {
	Certificates() []secrets.CertStatus
}

// Policy is what the page reads from the policy store.
type Policy interface {
	RevisionID() string
	Reloads() []policy.ReloadResult
}

// Quarantine is what the page reads from the quarantine state file's
// watch: the identities quarantined in the state serve applies (a file
// that does not parse leaves the last good state in force, and here),
// and what is wrong with the file when it does not load.
type Quarantine interface {
	Quarantined() []Quarantined
	// Problem is why the state file's current content does not load and
	// since when serve has seen it, "" while it loads.
	Problem() (string, time.Time)
}

// Quarantined is one quarantined identity.
type Quarantined struct {
	SPIFFEID string `json:"spiffeID"`
	// Agents are the agents entries with this SPIFFE ID (several when
	// they share it), empty for an identity no agent has.
	Agents []string  `json:"agents"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// Sources are where the panels' data comes from. A nil source is a
// component this process does not run: its endpoint answers
// {"enabled": false} and the page says so.
type Sources struct {
	Nodes        Nodes
	Certificates Certificates
	Policy       Policy
	// Decisions samples the decision counters (decisions per second and
	// deny reasons over the last hour).
	Decisions *Rates
	// Denies keeps the last denies, from the audit logger's tap.
	Denies *DenyRing
	// Quarantine is nil when serve has no quarantine state file.
	Quarantine Quarantine
	// QuarantineFile names the state file (in Kubernetes mode, where the
	// state is), for the page.
	QuarantineFile string
	// Now is the clock, default time.Now.
	Now func() time.Time
}

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every /ui response: nothing but
// the page's own files, no inline script or style, no framing.
const CSP = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds the page and its JSON endpoints to mux under /ui.
func Register(mux interface {
	Handle(pattern string, h http.Handler)
}, src Sources) {
	if src.Now == nil {
		src.Now = time.Now
	}
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/ui", http.FileServerFS(static))
	mux.Handle("GET /ui", secure(http.RedirectHandler("/ui/", http.StatusMovedPermanently)))
	mux.Handle("GET /ui/", secure(files))
	api := func(path string, body func() any) {
		mux.Handle("GET /ui/api/"+path, secure(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_ = json.NewEncoder(w).Encode(body())
		})))
	}
	api("nodes", func() any { return nodesBody(src) })
	api("certificates", func() any { return certsBody(src) })
	api("policy", func() any { return policyBody(src) })
	api("decisions", func() any { return decisionsBody(src) })
	api("denies", func() any { return deniesBody(src) })
	api("quarantine", func() any { return quarantineBody(src) })
}

// secure sets the headers every /ui response carries.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// NodesResponse is GET /ui/api/nodes.
type NodesResponse struct {
	Enabled bool             `json:"enabled"`
	Now     time.Time        `json:"now"`
	Nodes   []xds.NodeStatus `json:"nodes"`
	// NACKs are the last NACK of each type, by node then type.
	NACKs map[string]map[string]xds.NACKStatus `json:"nacks"`
}

func nodesBody(src Sources) NodesResponse {
	r := NodesResponse{Now: src.Now(), Nodes: []xds.NodeStatus{}, NACKs: map[string]map[string]xds.NACKStatus{}}
	if src.Nodes != nil {
		r.Enabled, r.Nodes, r.NACKs = true, src.Nodes.Status(), src.Nodes.NACKs()
	}
	return r
}

// CertificatesResponse is GET /ui/api/certificates.
type CertificatesResponse struct {
	Enabled      bool                 `json:"enabled"`
	Now          time.Time            `json:"now"`
	Certificates []secrets.CertStatus `json:"certificates"`
}

func certsBody(src Sources) CertificatesResponse {
	r := CertificatesResponse{Now: src.Now(), Certificates: []secrets.CertStatus{}}
	if src.Certificates != nil {
		r.Enabled, r.Certificates = true, src.Certificates.Certificates()
	}
	return r
}

// PolicyResponse is GET /ui/api/policy.
type PolicyResponse struct {
	Enabled bool `json:"enabled"`
	// Revision is the content-hash id of the revision in force, "" before
	// the first successful load.
	Revision string                `json:"revision"`
	Reloads  []policy.ReloadResult `json:"reloads"`
}

func policyBody(src Sources) PolicyResponse {
	r := PolicyResponse{Reloads: []policy.ReloadResult{}}
	if src.Policy != nil {
		r.Enabled, r.Revision, r.Reloads = true, src.Policy.RevisionID(), src.Policy.Reloads()
	}
	return r
}

func decisionsBody(src Sources) DecisionsResponse {
	if src.Decisions == nil {
		return DecisionsResponse{Now: src.Now(), Results: rateResults, Points: []RatePoint{}, DenyReasons: []ReasonCount{}}
	}
	return src.Decisions.Snapshot()
}

// DeniesResponse is GET /ui/api/denies.
type DeniesResponse struct {
	Enabled  bool   `json:"enabled"`
	Capacity int    `json:"capacity"`
	Denies   []Deny `json:"denies"` // newest first
}

func deniesBody(src Sources) DeniesResponse {
	if src.Denies == nil {
		return DeniesResponse{Denies: []Deny{}}
	}
	return DeniesResponse{Enabled: true, Capacity: src.Denies.Cap(), Denies: src.Denies.Last()}
}

// QuarantineResponse is GET /ui/api/quarantine.
type QuarantineResponse struct {
	Enabled bool `json:"enabled"`
	// File is the state file serve watches, "" without one.
	File        string        `json:"file"`
	Quarantined []Quarantined `json:"quarantined"` // sorted by SPIFFE ID
	// Error says why the state file's current content does not load,
	// "" while it loads. Quarantined is then the last state that loaded,
	// which serve keeps enforcing.
	Error string `json:"error"`
	// ErrorSince is when serve first saw the content Error is about.
	ErrorSince *time.Time `json:"errorSince,omitempty"`
}

func quarantineBody(src Sources) QuarantineResponse {
	r := QuarantineResponse{Quarantined: []Quarantined{}}
	if src.Quarantine != nil {
		r.Enabled, r.File = true, src.QuarantineFile
		for _, q := range src.Quarantine.Quarantined() {
			if q.Agents == nil {
				q.Agents = []string{}
			}
			r.Quarantined = append(r.Quarantined, q)
		}
		if msg, since := src.Quarantine.Problem(); msg != "" {
			r.Error, r.ErrorSince = msg, &since
		}
	}
	return r
}
