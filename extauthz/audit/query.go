package audit

import (
	"encoding/json"
	"strings"
	"time"
)

// Query selects records for an investigation (`meshward audit query`).
// Empty fields match anything. Principal, Subject, Reason and Tool take
// "*" as a wildcard matching any text (including "/"); the others match
// exactly.
type Query struct {
	Principal string // SPIFFE ID of the caller
	Subject   string // end-user subject, after decrypting shredded fields
	Decision  string // allow, deny or error
	Reason    string
	Kind      string
	Tool      string // MCP tool (mcp_tool) or JSON-RPC method (jsonrpc_method)
	Since     time.Time
	Until     time.Time // exclusive
}

// QueryRecord is the part of a record a query reads and prints.
type QueryRecord struct {
	Kind          string    `json:"kind"`
	Time          time.Time `json:"time"`
	Principal     string    `json:"principal"`
	Subject       string    `json:"subject"`
	Decision      string    `json:"decision"`
	Reason        string    `json:"reason"`
	Status        int       `json:"status"`
	Method        string    `json:"method"`
	Host          string    `json:"host"`
	Path          string    `json:"path"`
	Rule          string    `json:"rule"`
	MCPTool       string    `json:"mcp_tool"`
	JSONRPCMethod string    `json:"jsonrpc_method"`
	DecisionID    string    `json:"decision_id"`
	Message       string    `json:"message"`
}

// Match decodes a record line and reports whether q selects it.
func (q *Query) Match(line []byte) (*QueryRecord, bool) {
	var r QueryRecord
	if json.Unmarshal(line, &r) != nil {
		return nil, false
	}
	ok := glob(q.Principal, r.Principal) && glob(q.Subject, r.Subject) && glob(q.Reason, r.Reason) &&
		(q.Decision == "" || q.Decision == r.Decision) && (q.Kind == "" || q.Kind == r.Kind) &&
		(q.Tool == "" || glob(q.Tool, r.MCPTool) || glob(q.Tool, r.JSONRPCMethod)) &&
		(q.Since.IsZero() || !r.Time.Before(q.Since)) && (q.Until.IsZero() || r.Time.Before(q.Until))
	return &r, ok
}

// glob matches s against a pattern where * stands for any text; an
// empty pattern matches anything.
func glob(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return s == pattern
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}
