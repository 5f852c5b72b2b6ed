package extauthz

import (
	"net/http"
	"sync/atomic"

	"github.com/meshward/meshward/policy"
)

// ReasonQuarantined is the reason code of a Check denied because its
// caller or its destination is quarantined (meshward quarantine).
const ReasonQuarantined = "quarantined"

// rejQuarantined is the pre-built 403 of a quarantined caller or
// destination: decided before policy, never turned into an allow by
// dry-run.
var rejQuarantined = &rejection{status: http.StatusForbidden, reason: ReasonQuarantined, msg: "identity is quarantined"}

// Quarantine is an immutable set of quarantined SPIFFE IDs. The zero
// value and nil quarantine nobody.
type Quarantine struct {
	ids map[string]struct{}
}

// NewQuarantine returns the set of ids; ids is not retained.
func NewQuarantine(ids []string) *Quarantine {
	q := &Quarantine{ids: make(map[string]struct{}, len(ids))}
	for _, id := range ids {
		q.ids[id] = struct{}{}
	}
	return q
}

// Has reports whether id is quarantined.
func (q *Quarantine) Has(id string) bool {
	if q == nil || len(q.ids) == 0 || id == "" {
		return false
	}
	_, ok := q.ids[id]
	return ok
}

// Len is the number of quarantined identities.
func (q *Quarantine) Len() int {
	if q == nil {
		return 0
	}
	return len(q.ids)
}

// quarantineHolder holds the served set; every Check reads it once.
type quarantineHolder struct {
	cur atomic.Pointer[Quarantine]
}

// SetQuarantine swaps in the set every following Check is decided
// against, in one step; nil releases everyone.
func (s *Server) SetQuarantine(q *Quarantine) { s.quarantine.cur.Store(q) }

// quarantined returns the 403 when in's caller or the request's
// destination principal is quarantined, nil otherwise. It does not
// allocate.
func (s *Server) quarantined(in *policy.Input) *rejection {
	q := s.quarantine.cur.Load()
	if q.Len() == 0 {
		return nil
	}
	if q.Has(in.Principal) || q.Has(in.Request.GetAttributes().GetDestination().GetPrincipal()) {
		return rejQuarantined
	}
	return nil
}
