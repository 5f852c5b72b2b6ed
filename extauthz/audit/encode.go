package audit

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends rec as one JSON object, byte for byte what
// encoding/json writes for a Record (tests hold it to that), without its
// reflection: the writer's CPU per record is what audit costs the host.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	if y := r.Time.Year(); y < 0 || y > 9999 {
		return b, errors.New("time year outside of range [0,9999]")
	}
	b = append(b, `{"kind":`...)
	b = appendString(b, r.Kind)
	b = append(b, `,"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"process":`...)
	b = appendString(b, r.Process)
	b = appendField(b, `,"decision_id":`, r.DecisionID)
	b = appendField(b, `,"request_id":`, r.RequestID)
	b = appendField(b, `,"principal":`, r.Principal)
	b = appendField(b, `,"subject":`, r.Subject)
	b = appendStrings(b, `,"roles":`, r.Roles)
	b = appendField(b, `,"method":`, r.Method)
	b = appendField(b, `,"host":`, r.Host)
	b = appendField(b, `,"path":`, r.Path)
	b = appendField(b, `,"query":`, r.Query)
	b = appendField(b, `,"rule":`, r.Rule)
	b = appendField(b, `,"jsonrpc_method":`, r.JSONRPCMethod)
	b = appendField(b, `,"jsonrpc_id":`, r.JSONRPCID)
	b = appendField(b, `,"mcp_tool":`, r.MCPTool)
	if r.JSONRPCBatch != 0 {
		b = append(b, `,"jsonrpc_batch":`...)
		b = strconv.AppendInt(b, int64(r.JSONRPCBatch), 10)
	}
	b = appendField(b, `,"quota":`, r.Quota)
	b = appendField(b, `,"decision":`, r.Decision)
	b = appendField(b, `,"reason":`, r.Reason)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if r.DryRun {
		b = append(b, `,"dry_run":true`...)
	}
	b = appendStrings(b, `,"violations":`, r.Violations)
	b = appendField(b, `,"policy_revision":`, r.PolicyRevision)
	if r.Latency != 0 {
		b = append(b, `,"latency_ns":`...)
		b = strconv.AppendInt(b, int64(r.Latency), 10)
	}
	b = appendMap(b, `,"headers":`, r.Headers)
	if len(r.Claims) > 0 {
		var err error
		if b, err = appendValue(append(b, `,"claims":`...), r.Claims, 0); err != nil {
			return b, err
		}
	}
	if r.Body != nil {
		var err error
		if b, err = appendValue(append(b, `,"body":`...), r.Body, 0); err != nil {
			return b, err
		}
	}
	b = appendField(b, `,"node":`, r.Node)
	b = appendField(b, `,"type":`, r.Type)
	b = appendField(b, `,"message":`, r.Message)
	b = appendMap(b, `,"detail":`, r.Detail)
	return append(b, '}'), nil
}

func appendField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

func appendStrings(b []byte, key string, vs []string) []byte {
	if len(vs) == 0 && key != "" {
		return b
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

func appendMap(b []byte, key string, m map[string]string) []byte {
	if len(m) == 0 {
		return b
	}
	var arr [16]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, key...)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

// appendValue appends a JSON value as encoding/json does, handling the
// types of decoded JSON itself and handing any other to encoding/json.
func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxDepth {
		return b, errors.New("value nested too deep")
	}
	switch t := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return appendString(b, t), nil
	case bool:
		return strconv.AppendBool(b, t), nil
	case float64:
		return appendFloat(b, t)
	case int:
		return strconv.AppendInt(b, int64(t), 10), nil
	case int64:
		return strconv.AppendInt(b, t, 10), nil
	case []string:
		if t == nil {
			return append(b, "null"...), nil
		}
		return appendStrings(b, "", t), nil
	case []any:
		if t == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range t {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e, depth+1); err != nil {
				return b, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		if t == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, k), ':')
			var err error
			if b, err = appendValue(b, t[k], depth+1); err != nil {
				return b, err
			}
		}
		return append(b, '}'), nil
	default:
		j, err := json.Marshal(v)
		if err != nil {
			return b, err
		}
		return append(b, j...), nil
	}
}

// appendFloat formats f as encoding/json does.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, errors.New("unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string escaped as encoding/json does:
// control characters, quote and backslash, <, > and & (so a log viewer
// rendering HTML is safe), U+2028 and U+2029 (line breaks to JavaScript),
// and invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
