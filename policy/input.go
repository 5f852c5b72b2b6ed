package policy

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/schema"
)

// Input is the canonical request every policy step decides on. extauthz
// builds it once per Check from the CheckRequest, after rejecting every
// ambiguous request, so policy code never re-parses the raw request.
type Input struct {
	// Method is the HTTP method exactly as received (not upper-cased: a
	// lowercase method matches only a rule that names it).
	Method string
	// Host is lowercased, without port and trailing dot.
	Host string
	// Path is the canonical path, without query; never ambiguous.
	Path string
	// RawQuery is what followed `?`, not used for rule matching.
	RawQuery string
	// Headers by lowercase name. Read-only: it may alias the CheckRequest.
	Headers map[string]string
	// Body is the request body Envoy sent (from body or raw_body).
	Body []byte
	// BodyText, when not empty, is the same body as a string (Envoy's
	// body field): the schema step decodes it instead of Body, so the
	// parsed body shares its bytes rather than copying them again.
	BodyText string
	// BodyTruncated is set when Envoy sent only part of the body
	// (x-envoy-auth-partial-body: true).
	BodyTruncated bool
	// Principal is the verified SPIFFE ID of the caller.
	Principal string
	// Claims is the verified end-user JWT payload; nil when there is none.
	Claims map[string]any
	// Request is the original CheckRequest, for steps (Rego) that need the
	// whole document. Read-only.
	Request *authv3.CheckRequest
	// ParsedBody is Body decoded by the strict decoder (map[string]any,
	// []any, json.Number, string, bool or nil), set when HasParsedBody is:
	// by the caller, or by ParsedBodyValue. The body is parsed once per
	// request: the schema step decodes it into a tape, which ParsedBodyValue
	// converts for the steps that want values (Rego's input.parsed_body,
	// audit).
	ParsedBody    any
	HasParsedBody bool

	// tape is the schema step's decoded body, until ReleaseBody.
	tape *body.Tape
	// rpc is the JSON-RPC message being decided, on a JSON-RPC route.
	rpc rpcCall
}

// ParsedBodyValue returns the decoded body as values, converting the
// schema step's tape on first use; false when no step decoded the body
// (and the caller set none).
func (in *Input) ParsedBodyValue() (any, bool) {
	if !in.HasParsedBody && in.tape != nil {
		in.ParsedBody, in.HasParsedBody = in.tape.Value(0), true
	}
	return in.ParsedBody, in.HasParsedBody
}

// ReleaseBody returns the schema step's decoded body to its pool. Call it
// when nothing reads in any more (extauthz does, at the end of each
// Check); without it the memory is simply left to the garbage collector.
// Values from ParsedBodyValue stay valid.
func (in *Input) ReleaseBody() {
	if in.tape != nil {
		in.tape.Release()
		in.tape = nil
	}
}

// Decision is the outcome of a policy evaluation.
type Decision struct {
	// Allow is the effective verdict (true also when a dry-run deny was
	// turned into an allow; see DryRun).
	Allow bool
	// Status is the HTTP status of a deny (403, 401, 400, 413, 415), 200 on allow.
	Status int
	// Code is the machine-readable error code sent to the client on deny.
	Code string
	// Reason is the bounded reason code for metrics and audit (on allow
	// "allowed", or the deny reason a dry-run would have applied).
	Reason string
	// Message says which requirement failed, naming only the rule's
	// requirements and the caller's own values.
	Message string
	// Rule is the name of the deciding rule, if any.
	Rule string
	// DryRun is set when the policy would have denied but a dry-run rule
	// (or global dry-run) allowed; Code, Reason and Message then describe
	// the deny that would have happened.
	DryRun bool
	// Roles of the caller's identity, comma-separated (for the verified
	// roles header); empty when the caller has none.
	Roles string
	// Revision is the ID of the revision that decided.
	Revision string
	// Err is set for internal failures (no revision, schema or Rego
	// evaluation error): always a deny, answered with status_on_error and
	// counted as an error, never shown to the client.
	Err error
	// Violations are where the body failed its schema (JSON pointers,
	// keywords and messages that never quote sensitive values), filled by
	// the body step. Audit records keep only their paths.
	Violations []schema.Violation
	// Mutations are response changes asked for by Rego; nil otherwise.
	Mutations *Mutations
	// RPC describes the JSON-RPC message on a JSON-RPC route.
	RPC RPC
	// RetryAfter is the seconds a rate-limited caller should wait (429),
	// and Quota the name of the quota that ran out.
	RetryAfter int
	Quota      string
}

// Header is one header name and value.
type Header struct {
	Name, Value string
}

// Mutations are the response changes a Rego decision may ask for, in the
// shape opa-envoy-plugin's result object has.
type Mutations struct {
	// RequestHeaders are set (overwritten) on the upstream request on allow.
	RequestHeaders []Header
	// RemoveRequestHeaders are removed from the upstream request on allow.
	RemoveRequestHeaders []string
	// ResponseHeaders are sent to the client (deny) or added to the
	// response (allow).
	ResponseHeaders []Header
	// QueryParametersToSet and QueryParametersToRemove change the
	// upstream request's query on allow.
	QueryParametersToSet    []Header
	QueryParametersToRemove []string
	// Body replaces the deny body when HasBody is set.
	Body    string
	HasBody bool
	// DynamicMetadata is merged into the CheckResponse's dynamic_metadata.
	DynamicMetadata map[string]any
}

// Reason and error codes of policy decisions. They are bounded (metric
// label values) and stable (clients and dashboards key on them).
const (
	ReasonAllowed           = "allowed"
	ReasonNoMatchingRule    = "no_matching_rule"
	ReasonDeniedByRule      = "denied_by_rule"
	ReasonMissingRole       = "missing_role"
	ReasonAttribute         = "attribute_mismatch"
	ReasonClaim             = "claim_mismatch"
	ReasonSchemaUnavailable = "schema_unavailable"
	ReasonSchemaInvalid     = "schema_invalid"
	ReasonRegoDenied        = "rego_denied"
	ReasonNoRevision        = "no_policy_revision"
	ReasonEvalError         = "evaluation_error"
)
