// Package opa runs Envoy authorization policies written in Rego for
// opa-envoy-plugin, unchanged, on OPA's v1 Go API.
//
// An [Engine] is one immutable policy revision: modules and data loaded from
// files, folders or an OPA bundle, compiled and prepared once
// (rego.PrepareForEval). Loading a new revision never touches a running
// one: a caller that fails to build a new Engine keeps serving the old one
// ([Poller] does exactly that).
//
// [Engine.Eval] builds the same input document as opa-envoy-plugin for the
// Envoy v3 CheckRequest (input.attributes as protojson with lowerCamel
// field names, parsed_path, parsed_query, parsed_body, truncated_body,
// version), adds input.meshward when the caller passes its own identity
// view, and validates the decision exactly like opa-envoy-plugin: a boolean,
// or an object with "allowed" and the optional response fields.
//
// Every error Eval returns means deny. [ErrInput] marks a request whose
// path or body cannot be parsed (opa-envoy-plugin answers 400); every other
// error (undefined decision, evaluation error, deadline, invalid decision)
// is to be answered with the configured status_on_error and counted as an
// error, never as an allow and never as a gRPC error.
//
// The package does not import meshward's policy package: policy converts
// its RegoConfig into a [Config] and calls this package.
package opa
