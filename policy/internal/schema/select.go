package schema

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/meshward/meshward/policy/internal/body"
)

// Selector picks a message's schema by one of its top-level fields, the
// discriminator. It has the fields of policy.SchemaSelector, so
// schema.Selector(*rule.SchemaBy) converts one.
type Selector struct {
	// Field is a top-level field of the message, e.g. "type".
	Field string
	// Schemas maps the field's values to schema names.
	Schemas map[string]string
}

// ErrNoSchema: the message's discriminator does not select a schema. The
// message is denied (400 schema_violation).
var ErrNoSchema = errors.New("no schema for this message")

// SelectError is why Select chose no schema, as a violation for the deny body.
type SelectError struct {
	Violation Violation
}

func (e *SelectError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrNoSchema, e.Violation.Path, e.Violation.Message)
}

func (e *SelectError) Unwrap() error { return ErrNoSchema }

// Select returns the name of the schema for doc (as body.Decode returns
// it): the one sel.Schemas maps the string value of doc's sel.Field to. A
// doc that is not an object, lacks the field, has a non-string value there
// or a value not in the map gets a *SelectError (wrapping ErrNoSchema).
func (sel Selector) Select(doc any) (string, error) {
	obj, ok := doc.(map[string]any)
	if !ok {
		return sel.pick(false, nil, false)
	}
	raw, ok := obj[sel.Field]
	return sel.pick(true, raw, ok)
}

// SelectTape is Select for a message decoded into a tape.
func (sel Selector) SelectTape(t *body.Tape) (string, error) {
	if len(t.Nodes) == 0 || t.Nodes[0].Kind != body.ObjectNode {
		return sel.pick(false, nil, false)
	}
	for j := 1; j < int(t.Nodes[0].End); j = int(t.Nodes[j].End) {
		if v := &t.Nodes[j]; v.Key == sel.Field {
			if v.Kind == body.StringNode {
				return sel.pick(true, v.Text, true)
			}
			return sel.pick(true, nil, true) // not a string
		}
	}
	return sel.pick(true, nil, false)
}

// pick selects by the discriminator's value raw (present: the field is
// there) in a message that is an object (isObject).
func (sel Selector) pick(isObject bool, raw any, present bool) (string, error) {
	fail := func(msg string) (string, error) {
		return "", &SelectError{Violation{Path: "/" + escapeToken(sel.Field), Keyword: "discriminator", Message: msg}}
	}
	if !isObject {
		return "", &SelectError{Violation{Path: "", Keyword: "discriminator", Message: "want a JSON object with a " + strconv.Quote(sel.Field) + " field"}}
	}
	if !present {
		return fail("missing property " + strconv.Quote(sel.Field))
	}
	val, ok := raw.(string)
	if !ok {
		return fail("want a string")
	}
	name, ok := sel.Schemas[val]
	if !ok {
		if len(val) <= DefaultMaxValueLen {
			return fail("unknown value " + strconv.Quote(val))
		}
		return fail("unknown value")
	}
	return name, nil
}
