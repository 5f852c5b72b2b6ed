// Package policy holds meshward's compiled, immutable policy revisions: the
// declarative RBAC/ABAC rules, JSON Schemas for message bodies and Rego
// policies run with OPA. A revision is built once from configuration
// (compile once, evaluate many), validated, and swapped in atomically; it
// does no I/O while it evaluates a request.
package policy
