// Package schema compiles the JSON Schemas meshward validates message
// bodies against, and validates decoded bodies with them.
//
// Compile takes named sources (files or inline documents) and builds an
// immutable Set once per policy revision, with
// github.com/santhosh-tekuri/jsonschema/v6: draft 2020-12 unless a
// schema's $schema names draft-07; $ref across the sources by $id, or to
// files in configured local folders; nothing is ever fetched from the
// network. Every compile problem names the schema, its file and the JSON
// pointer of the problem.
//
// Set.Validate returns violations (instance path, keyword, short message)
// capped in number, quoting the message's own values only when short and
// never from sensitive fields. Selector picks a schema by a discriminator
// field of the message.
package schema
