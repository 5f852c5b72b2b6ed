package policy

import (
	"sync"
	"time"
)

// ReloadResult is the outcome of one Store.Reload.
type ReloadResult struct {
	At time.Time `json:"at"`
	// Result is "success", "failure" (the previous revision kept) or
	// "unchanged", as in meshward_policy_reloads_total.
	Result string `json:"result"`
	// Revision is the revision served after the reload ("" if none).
	Revision string `json:"revision,omitempty"`
	// Error is why a failed reload was refused.
	Error string `json:"error,omitempty"`
}

// maxReloadHistory is how many reload results a Store keeps.
const maxReloadHistory = 20

// reloadHistory keeps the last reload results, newest last.
type reloadHistory struct {
	mu   sync.Mutex
	last []ReloadResult
}

func (h *reloadHistory) add(r ReloadResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.last) == maxReloadHistory {
		h.last = append(h.last[:0], h.last[1:]...)
	}
	h.last = append(h.last, r)
}

// Reloads returns the results of the last reloads (at most 20), newest
// first. It does not wait for a reload in progress.
func (s *Store) Reloads() []ReloadResult {
	s.hist.mu.Lock()
	defer s.hist.mu.Unlock()
	out := make([]ReloadResult, len(s.hist.last))
	for i, r := range s.hist.last {
		out[len(out)-1-i] = r
	}
	return out
}
