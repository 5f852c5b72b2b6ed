// Package policy holds meshward's compiled, immutable policy revisions: the
// declarative RBAC/ABAC rules, JSON Schemas for message bodies, JSON-RPC and
// MCP rules, quotas and Rego policies run with OPA. A revision is built once
// from configuration (compile once, evaluate many), validated, and swapped
// in atomically; it does no I/O while it evaluates a request.
//
// The stable API is Config (the authz section), Compile, Revision, Store,
// Input and Decision, with RegoBundle for a Rego bundle URL. The Rego
// engine (internal/opa), the JSON Schema compiler and its fast path
// (internal/schema) and the strict body decoder (internal/body) are
// internal: their shape follows what makes a Check fast and may change
// in any release.
package policy
