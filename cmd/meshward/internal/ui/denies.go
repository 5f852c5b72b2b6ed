package ui

import (
	"slices"
	"sync"
	"time"

	"github.com/meshward/meshward/extauthz/audit"
)

// Deny is one denied decision as the audit logger wrote it, after
// redaction. Headers, claims and body are not kept.
type Deny struct {
	Time           time.Time `json:"time"`
	Kind           string    `json:"kind"` // authz_denial, authn_failure, or decision for an internal error
	DecisionID     string    `json:"decisionID,omitempty"`
	RequestID      string    `json:"requestID,omitempty"`
	Principal      string    `json:"principal,omitempty"`
	Subject        string    `json:"subject,omitempty"`
	Method         string    `json:"method,omitempty"`
	Host           string    `json:"host,omitempty"`
	Path           string    `json:"path,omitempty"`
	Rule           string    `json:"rule,omitempty"`
	Decision       string    `json:"decision"` // deny, or error (an internal failure, denied)
	Reason         string    `json:"reason,omitempty"`
	Status         int       `json:"status,omitempty"`
	DryRun         bool      `json:"dryRun,omitempty"`
	Violations     []string  `json:"violations,omitempty"`
	PolicyRevision string    `json:"policyRevision,omitempty"`
}

// DefaultDenies is how many denies a DenyRing keeps by default.
const DefaultDenies = 100

// DenyRing keeps the last denies in memory. Its Tap method is an
// audit.Tap: it sees records after redaction, so nothing the audit trail
// hides reaches the page.
type DenyRing struct {
	mu   sync.Mutex
	buf  []Deny
	next int // where the next deny goes once buf is full
	n    int // cap(buf), fixed: read without the lock
}

// NewDenyRing keeps the last n denies (DefaultDenies when n <= 0).
func NewDenyRing(n int) *DenyRing {
	if n <= 0 {
		n = DefaultDenies
	}
	return &DenyRing{buf: make([]Deny, 0, n), n: n}
}

// Cap is how many denies the ring keeps.
func (d *DenyRing) Cap() int { return d.n }

// Tap keeps rec if it is a denied decision (by policy, for identity, or
// for an internal error); security events and allows are ignored.
func (d *DenyRing) Tap(rec *audit.Record) {
	if rec.Decision != "deny" && rec.Decision != "error" {
		return
	}
	e := Deny{
		Time: rec.Time, Kind: rec.Kind, DecisionID: rec.DecisionID, RequestID: rec.RequestID,
		Principal: rec.Principal, Subject: rec.Subject, Method: rec.Method, Host: rec.Host, Path: rec.Path,
		Rule: rec.Rule, Decision: rec.Decision, Reason: rec.Reason, Status: rec.Status, DryRun: rec.DryRun,
		Violations: slices.Clone(rec.Violations), PolicyRevision: rec.PolicyRevision,
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.buf) < cap(d.buf) {
		d.buf = append(d.buf, e)
		return
	}
	d.buf[d.next] = e
	d.next = (d.next + 1) % len(d.buf)
}

// Last returns the kept denies, newest first.
func (d *DenyRing) Last() []Deny {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Deny, 0, len(d.buf))
	for i := range len(d.buf) {
		out = append(out, d.buf[(d.next+len(d.buf)-1-i)%len(d.buf)])
	}
	return out
}
