package body

import (
	"encoding/json"
	"sync"
)

// A Tape is a decoded document laid out flat, in document order: each
// object or array node is followed by its members or items, each with
// everything under it. It is what the decoder builds; [Decode] converts it
// to maps and slices, and the schema step walks it as is, which saves
// building a map per object on every request. A Tape holds slices of the
// body (and of unescaped copies), never of its own memory, so values taken
// from it outlive it.
type Tape struct {
	Nodes []Node
}

// Node is one value of a Tape.
type Node struct {
	// Key is the member name when the parent is an object.
	Key string
	// Text is a string's value, a number's JSON text (exactly as sent),
	// or "true" / "false".
	Text string
	Kind NodeKind
	// Len is the number of members (object) or items (array).
	Len int32
	// End is the index just past this node and everything under it: the
	// next sibling, when there is one.
	End int32
}

// NodeKind is the JSON type of a Node.
type NodeKind uint8

// The kinds of Node.
const (
	NullNode NodeKind = iota + 1
	BoolNode
	NumberNode
	StringNode
	ObjectNode
	ArrayNode
)

// AcquireTape returns an empty Tape from a pool; give it back with
// Release when no Node of it is used any more.
func AcquireTape() *Tape {
	return tapePool.Get().(*Tape)
}

// Release empties t and returns it to the pool (t must not be used
// after). A Tape grown past maxPooledScratch nodes is left to the garbage
// collector.
func (t *Tape) Release() {
	if cap(t.Nodes) > maxPooledScratch {
		return
	}
	t.Reset()
	tapePool.Put(t)
}

// Reset empties t, keeping its memory.
func (t *Tape) Reset() {
	clear(t.Nodes) // drop the strings for the garbage collector
	t.Nodes = t.Nodes[:0]
}

var tapePool = sync.Pool{New: func() any { return &Tape{Nodes: make([]Node, 0, 32)} }}

// Value returns node i and everything under it as Decode returns values:
// map[string]any, []any, json.Number, string, bool or nil.
func (t *Tape) Value(i int) any {
	n := &t.Nodes[i]
	switch n.Kind {
	case BoolNode:
		return n.Text == "true"
	case NumberNode:
		return number(n.Text)
	case StringNode:
		return n.Text
	case ObjectNode:
		m := make(map[string]any, n.Len)
		for j := i + 1; j < int(n.End); j = int(t.Nodes[j].End) {
			m[t.Nodes[j].Key] = t.Value(j)
		}
		return m
	case ArrayNode:
		a := make([]any, 0, n.Len)
		for j := i + 1; j < int(n.End); j = int(t.Nodes[j].End) {
			a = append(a, t.Value(j))
		}
		return a
	}
	return nil
}

// number boxes a number's text as json.Number, sharing the boxes of 0 to
// 99.
func number(s string) any {
	if n := len(s); n <= 2 && s[0] != '-' && (n == 1 || s[0] != '0') {
		if n == 1 || (s[1] >= '0' && s[1] <= '9') {
			return smallNumbers[atoi2(s)]
		}
	}
	return json.Number(s)
}

// FromValue appends v, a value of the types Decode returns, to t, with
// maxDepth levels of nesting at most. It reports false, leaving t in an
// unspecified state, for any other type or deeper nesting. Object members
// come in map order. Strings and numbers are taken as they are: nothing is
// checked (a number's text need not be JSON).
func (t *Tape) FromValue(v any, maxDepth int) bool {
	return t.fromValue(v, "", maxDepth)
}

func (t *Tape) fromValue(v any, key string, depth int) bool {
	if depth < 0 {
		return false
	}
	i := len(t.Nodes)
	t.Nodes = append(t.Nodes, Node{Key: key})
	n := &t.Nodes[i]
	switch x := v.(type) {
	case nil:
		n.Kind = NullNode
	case bool:
		n.Kind, n.Text = BoolNode, "false"
		if x {
			n.Text = "true"
		}
	case json.Number:
		n.Kind, n.Text = NumberNode, string(x)
	case string:
		n.Kind, n.Text = StringNode, x
	case map[string]any:
		n.Kind, n.Len = ObjectNode, int32(len(x)) //nolint:gosec // bounded by memory
		for k, e := range x {
			if !t.fromValue(e, k, depth-1) {
				return false
			}
		}
	case []any:
		n.Kind, n.Len = ArrayNode, int32(len(x)) //nolint:gosec // bounded by memory
		for _, e := range x {
			if !t.fromValue(e, "", depth-1) {
				return false
			}
		}
	default:
		return false
	}
	t.Nodes[i].End = int32(len(t.Nodes)) //nolint:gosec // bounded by memory
	return true
}
