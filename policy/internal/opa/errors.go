package opa

import "errors"

// Errors callers branch on. Every error returned by [Engine.Eval] is a deny.
var (
	// ErrUndefined: the query had no result for this input (for example
	// the policy has no default). opa-envoy-plugin treats it as an error.
	ErrUndefined = errors.New("decision undefined")
	// ErrInvalidDecision: the decision is neither a boolean nor an object
	// with a boolean "allowed", or one of its response fields has the
	// wrong type.
	ErrInvalidDecision = errors.New("invalid decision")
	// ErrInput: the request could not be turned into an input document
	// (unparsable path, malformed JSON or form body, bad content-length).
	// opa-envoy-plugin denies these with 400.
	ErrInput = errors.New("invalid request input")
)
