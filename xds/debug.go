package xds

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// NodeStatus is what the server knows about one connected node.
type NodeStatus struct {
	Node    string    `json:"node"`
	Streams int       `json:"streams"`
	Since   time.Time `json:"connectedSince"`
	// Versions are the versions of the node's current snapshot, by type
	// (listener, cluster, endpoint, route, secret).
	Versions map[string]string `json:"versions"`
	// Acked are the versions the node last ACKed, by type.
	Acked    map[string]AckStatus `json:"acked"`
	LastNACK *NACKStatus          `json:"lastNack,omitempty"`
}

// AckStatus is the last version of a type a node accepted.
type AckStatus struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

// NACKStatus is the last configuration a node rejected.
type NACKStatus struct {
	Type    string    `json:"type"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// Status lists the connected nodes, sorted by name.
func (s *Server) Status() []NodeStatus {
	s.mu.Lock()
	out := make([]NodeStatus, 0, len(s.nodes))
	for _, st := range s.nodes {
		ns := NodeStatus{Node: st.name, Streams: st.streams, Since: st.since, Versions: map[string]string{}, Acked: map[string]AckStatus{}}
		if st.current != nil {
			for typ, v := range st.current.versions {
				ns.Versions[typeLabel(typ)] = v
			}
		}
		for typ, a := range st.acked {
			ns.Acked[typeLabel(typ)] = a
		}
		if st.lastNACK != nil {
			n := *st.lastNACK
			ns.LastNACK = &n
		}
		out = append(out, ns)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// DebugHandler serves Status as JSON, for the admin server's /debug/xds.
func (s *Server) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"nodes": s.Status()})
	})
}
