// Package body turns a request body into the value meshward validates and
// hands to Rego, or refuses it. It is on the decision hot path.
//
// CheckHeaders decides from content-type, content-encoding and
// x-envoy-auth-partial-body whether a body can be judged at all (415, 413).
// Decode is a strict RFC 8259 decoder: it keeps numbers exact
// (json.Number), and rejects what makes two JSON readers disagree about
// one message (duplicate keys, keys differing only in case, invalid UTF-8)
// and what costs too much (bodies over a byte limit, nesting over a depth
// limit), with the byte offset, line and column of the problem. It builds
// a flat Tape of the document, which DecodeTapeString hands over as is
// (the schema step walks it without building a map per object) and
// Decode converts to maps and slices.
//
// Every refusal maps to a Problem: the HTTP status of the deny, a stable
// code and a message safe to return to the sender.
package body
