package secrets

import (
	"slices"
	"strings"
	"time"
)

// CertStatus is what the Manager knows about one registered SPIFFE ID's
// certificate, for status pages. Times are zero when no certificate was
// issued yet.
type CertStatus struct {
	ID string `json:"spiffeID"`
	// NotBefore and NotAfter bound the served leaf's validity.
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// Issued is when the served certificate was received; its life, for
	// LowLife and readiness, runs from Issued to NotAfter.
	Issued time.Time `json:"issued,omitzero"`
	// NextIssue is when the Manager next issues (rotation at half-life, or
	// the retry after a failure).
	NextIssue time.Time `json:"nextIssue,omitzero"`
	// LifeLeft is the fraction of the life still left (0 once expired).
	LifeLeft float64 `json:"lifeLeft"`
	// LowLife: less than 10 % of the life is left (readiness fails then).
	LowLife bool `json:"lowLife"`
	// Failures counts issuance failures since the last success; LastError
	// is the last one's message.
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"lastError,omitempty"`
}

// Certificates lists the registered SPIFFE IDs' certificates, sorted by
// ID. It reads what Ready reads and never issues anything.
func (m *Manager) Certificates() []CertStatus {
	now := m.o.now()
	m.mu.Lock()
	out := make([]CertStatus, 0, len(m.ids))
	for id, e := range m.ids {
		cs := CertStatus{ID: id, NextIssue: e.due, Failures: e.failures}
		if e.lastErr != nil {
			cs.LastError = e.lastErr.Error()
		}
		if s := e.svid; s != nil {
			cs.NotBefore, cs.NotAfter, cs.Issued = s.Leaf().NotBefore, s.NotAfter, e.issued
			if life := s.NotAfter.Sub(e.issued); life > 0 {
				cs.LifeLeft = min(1, max(0, float64(s.NotAfter.Sub(now))/float64(life)))
			}
			cs.LowLife = s.NotAfter.Sub(now) < s.NotAfter.Sub(e.issued)/10
		}
		out = append(out, cs)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b CertStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}
