package audit

import "time"

// Kinds of records. A decision is the record of one Check; the others are
// security events that share the stream.
const (
	KindDecision         = "decision"
	KindAuthnFailure     = "authn_failure" // no or invalid identity
	KindAuthzDenial      = "authz_denial"  // a deny by policy
	KindPolicyReload     = "policy_reload_failure"
	KindConfigReload     = "config_reload_failure" // a component kept its previous configuration
	KindXDSNack          = "xds_nack"
	KindXDSRefused       = "xds_refused_subscription"
	KindVaultAuthFailure = "vault_auth_failure" // login or renewal
	KindCertIssueFailure = "cert_issue_failure"
	KindAgentQuarantined = "agent_quarantined" // meshward quarantine took effect; detail names who
	KindAgentReleased    = "agent_released"    // meshward release took effect; detail names who
	KindDetection        = "detection"         // a detection rule's threshold was reached; detail names the rule and action
)

// Record is one audit record: a decision or a security event. Fields that
// do not apply stay empty and are omitted from the JSON line.
type Record struct {
	Kind string `json:"kind"`
	// Time is set by the logger when zero (UTC, RFC 3339 with nanoseconds).
	Time time.Time `json:"time"`
	// Seq is set by each sink: a per-process sequence without gaps.
	Seq uint64 `json:"seq"`
	// Process is set by the logger: a random nonce drawn at start, so that
	// the sequences of two runs writing to one file are told apart.
	Process string `json:"process"`

	DecisionID string   `json:"decision_id,omitempty"`
	RequestID  string   `json:"request_id,omitempty"`
	Principal  string   `json:"principal,omitempty"`
	Subject    string   `json:"subject,omitempty"` // end-user JWT sub
	Roles      []string `json:"roles,omitempty"`
	Method     string   `json:"method,omitempty"`
	Host       string   `json:"host,omitempty"`
	Path       string   `json:"path,omitempty"`
	Query      string   `json:"query,omitempty"` // only when configured
	Rule       string   `json:"rule,omitempty"`
	// JSONRPCMethod, JSONRPCID and MCPTool describe the JSON-RPC message
	// on a JSON-RPC route (the element that decided a deny, in a batch of
	// JSONRPCBatch elements). The id is as sent: a number's text or a
	// string's value. Quota names the quota that refused the request.
	JSONRPCMethod string `json:"jsonrpc_method,omitempty"`
	JSONRPCID     string `json:"jsonrpc_id,omitempty"`
	MCPTool       string `json:"mcp_tool,omitempty"`
	JSONRPCBatch  int    `json:"jsonrpc_batch,omitempty"`
	Quota         string `json:"quota,omitempty"`
	// Decision is "allow", "deny" or "error" (an internal failure decided as deny).
	Decision string `json:"decision,omitempty"`
	Reason   string `json:"reason,omitempty"` // reason code, e.g. missing_role
	Status   int    `json:"status,omitempty"` // HTTP status sent (200 on allow)
	DryRun   bool   `json:"dry_run,omitempty"`
	// Violations are JSON pointers into the body that failed its schema (never values).
	Violations     []string      `json:"violations,omitempty"`
	PolicyRevision string        `json:"policy_revision,omitempty"`
	Latency        time.Duration `json:"latency_ns,omitempty"`
	// Headers and Claims hold values the logger redacts per configuration.
	Headers map[string]string `json:"headers,omitempty"`
	Claims  map[string]any    `json:"claims,omitempty"`

	// Body is the parsed JSON body, written only with includeBody and then
	// with the configured bodyPaths redacted.
	Body any `json:"body,omitempty"`

	// Node, Type, Message and Detail describe security events.
	Node    string            `json:"node,omitempty"`
	Type    string            `json:"type,omitempty"`
	Message string            `json:"message,omitempty"`
	Detail  map[string]string `json:"detail,omitempty"`
}
