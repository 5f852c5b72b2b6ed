package opa

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// protoToValue converts a message to the ast.Value that
// protojson.Marshal followed by a JSON decode would give (lowerCamel
// field names, unpopulated fields omitted, 64-bit integers as strings,
// bytes as base64, enums by name, well-known types in their JSON form),
// without the JSON round trip.
func protoToValue(m protoreflect.Message) (ast.Value, error) {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Struct":
		if s, ok := m.Interface().(*structpb.Struct); ok {
			return structToValue(s)
		}
	case "google.protobuf.Value":
		if v, ok := m.Interface().(*structpb.Value); ok {
			return structValueToValue(v)
		}
	case "google.protobuf.ListValue":
		if l, ok := m.Interface().(*structpb.ListValue); ok {
			return listToValue(l)
		}
	case "google.protobuf.Timestamp":
		if t, ok := m.Interface().(*timestamppb.Timestamp); ok {
			return timestampToValue(t)
		}
	}
	if m.Descriptor().FullName().Parent() == "google.protobuf" {
		// Any, Duration, FieldMask, wrappers, Empty: rare in a
		// CheckRequest; use protojson itself so the form is exact.
		return protojsonValue(m)
	}
	n := m.Descriptor().Fields().Len()
	obj := ast.NewObjectWithCapacity(n)
	// One allocation for the value terms of all fields instead of one each.
	slab := make([]ast.Term, n)
	used := 0
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		var val ast.Value
		switch {
		case fd.IsList():
			val, err = listFieldToValue(fd, v.List())
		case fd.IsMap():
			val, err = mapFieldToValue(fd, v.Map())
		default:
			val, err = singularToValue(fd, v)
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", fd.JSONName(), err)
			return false
		}
		obj.Insert(fieldKey(fd), slabTerm(slab, &used, val))
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

// fieldKeys caches one key term per field: JSON names repeat on every
// request, and terms are never mutated by evaluation.
var fieldKeys sync.Map // protoreflect.FieldDescriptor -> *ast.Term

func fieldKey(fd protoreflect.FieldDescriptor) *ast.Term {
	if t, ok := fieldKeys.Load(fd); ok {
		return t.(*ast.Term)
	}
	t := ast.StringTerm(fd.JSONName())
	fieldKeys.Store(fd, t)
	return t
}

// slabTerm returns a term for v from slab, or a new one when slab is used up.
func slabTerm(slab []ast.Term, used *int, v ast.Value) *ast.Term {
	if *used >= len(slab) {
		return ast.NewTerm(v)
	}
	t := &slab[*used]
	t.Value = v
	*used++
	return t
}

func listFieldToValue(fd protoreflect.FieldDescriptor, l protoreflect.List) (ast.Value, error) {
	terms := make([]*ast.Term, l.Len())
	slab := make([]ast.Term, l.Len())
	for i := range l.Len() {
		v, err := singularToValue(fd, l.Get(i))
		if err != nil {
			return nil, err
		}
		slab[i].Value = v
		terms[i] = &slab[i]
	}
	return ast.NewArray(terms...), nil
}

func mapFieldToValue(fd protoreflect.FieldDescriptor, m protoreflect.Map) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(m.Len())
	slab := make([]ast.Term, 2*m.Len())
	used := 0
	vd := fd.MapValue()
	var err error
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		key := k.String() // bool and integer keys print as protojson does
		if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(key) {
			err = errors.New("map key contains invalid UTF-8")
			return false
		}
		var val ast.Value
		if val, err = singularToValue(vd, v); err != nil {
			return false
		}
		obj.Insert(slabTerm(slab, &used, ast.String(key)), slabTerm(slab, &used, val))
		return true
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

func singularToValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (ast.Value, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return ast.Boolean(v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return ast.Number(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return ast.Number(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return ast.String(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ast.String(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind:
		return floatToValue(v.Float(), 32), nil
	case protoreflect.DoubleKind:
		return floatToValue(v.Float(), 64), nil
	case protoreflect.StringKind:
		s := v.String()
		if !utf8.ValidString(s) {
			return nil, errors.New("string field contains invalid UTF-8")
		}
		return ast.String(s), nil
	case protoreflect.BytesKind:
		return ast.String(base64.StdEncoding.EncodeToString(v.Bytes())), nil
	case protoreflect.EnumKind:
		if fd.Enum().FullName() == "google.protobuf.NullValue" {
			return ast.Null{}, nil
		}
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return ast.String(string(ev.Name())), nil
		}
		return ast.Number(strconv.FormatInt(int64(v.Enum()), 10)), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protoToValue(v.Message())
	}
	return nil, fmt.Errorf("unsupported field kind %v", fd.Kind())
}

// floatToValue formats like protojson: NaN and infinities as strings,
// exponent form outside [1e-6, 1e21).
func floatToValue(f float64, bits int) ast.Value {
	switch {
	case math.IsNaN(f):
		return ast.String("NaN")
	case math.IsInf(f, 1):
		return ast.String("Infinity")
	case math.IsInf(f, -1):
		return ast.String("-Infinity")
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	s := strconv.FormatFloat(f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7, as encoding/json and protojson write it.
		if n := len(s); n >= 4 && s[n-4] == 'e' && s[n-3] == '-' && s[n-2] == '0' {
			s = s[:n-2] + s[n-1:]
		}
	}
	return ast.Number(s)
}

func structToValue(s *structpb.Struct) (ast.Value, error) {
	obj := ast.NewObjectWithCapacity(len(s.GetFields()))
	for k, v := range s.GetFields() {
		if !utf8.ValidString(k) {
			return nil, errors.New("struct key contains invalid UTF-8")
		}
		val, err := structValueToValue(v)
		if err != nil {
			return nil, err
		}
		obj.Insert(ast.StringTerm(k), ast.NewTerm(val))
	}
	return obj, nil
}

func listToValue(l *structpb.ListValue) (ast.Value, error) {
	terms := make([]*ast.Term, len(l.GetValues()))
	for i, v := range l.GetValues() {
		val, err := structValueToValue(v)
		if err != nil {
			return nil, err
		}
		terms[i] = ast.NewTerm(val)
	}
	return ast.NewArray(terms...), nil
}

func structValueToValue(v *structpb.Value) (ast.Value, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return ast.Null{}, nil
	case *structpb.Value_BoolValue:
		return ast.Boolean(k.BoolValue), nil
	case *structpb.Value_NumberValue:
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return nil, fmt.Errorf("google.protobuf.Value: invalid number %v", k.NumberValue)
		}
		return floatToValue(k.NumberValue, 64), nil
	case *structpb.Value_StringValue:
		if !utf8.ValidString(k.StringValue) {
			return nil, errors.New("string value contains invalid UTF-8")
		}
		return ast.String(k.StringValue), nil
	case *structpb.Value_StructValue:
		return structToValue(k.StructValue)
	case *structpb.Value_ListValue:
		return listToValue(k.ListValue)
	}
	return nil, errors.New("google.protobuf.Value: none of the oneof fields is set")
}

// timestampToValue formats like protojson: RFC 3339 in UTC with 0, 3, 6
// or 9 fractional digits.
func timestampToValue(t *timestamppb.Timestamp) (ast.Value, error) {
	secs, nanos := t.GetSeconds(), t.GetNanos()
	if secs < -62135596800 || secs > 253402300799 || nanos < 0 || nanos >= 1e9 {
		return nil, errors.New("google.protobuf.Timestamp: out of range")
	}
	s := time.Unix(secs, int64(nanos)).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return ast.String(s + "Z"), nil
}

func protojsonValue(m protoreflect.Message) (ast.Value, error) {
	bs, err := protojson.Marshal(m.Interface())
	if err != nil {
		return nil, err
	}
	return jsonToValue(bs)
}

// jsonToValue decodes one JSON document with numbers kept exact.
func jsonToValue(bs []byte) (ast.Value, error) {
	var x any
	if err := util.UnmarshalJSON(bs, &x); err != nil {
		return nil, err
	}
	return goToValue(x)
}

// goToValue converts the values JSON decoders produce (map[string]any,
// []any, json.Number, float64, string, bool, nil, and []string /
// map[string][]string from form parsing) to ast values without reflection.
func goToValue(x any) (ast.Value, error) {
	switch x := x.(type) {
	case nil:
		return ast.Null{}, nil
	case bool:
		return ast.Boolean(x), nil
	case string:
		return ast.String(x), nil
	case json.Number:
		return ast.Number(x), nil
	case float64:
		return floatToValue(x, 64), nil
	case int:
		return ast.Number(strconv.Itoa(x)), nil
	case int64:
		return ast.Number(strconv.FormatInt(x, 10)), nil
	case map[string]any:
		obj := ast.NewObjectWithCapacity(len(x))
		slab := make([]ast.Term, 2*len(x))
		used := 0
		for k, v := range x {
			val, err := goToValue(v)
			if err != nil {
				return nil, err
			}
			obj.Insert(slabTerm(slab, &used, ast.String(k)), slabTerm(slab, &used, val))
		}
		return obj, nil
	case []any:
		terms := make([]*ast.Term, len(x))
		slab := make([]ast.Term, len(x))
		for i, v := range x {
			val, err := goToValue(v)
			if err != nil {
				return nil, err
			}
			slab[i].Value = val
			terms[i] = &slab[i]
		}
		return ast.NewArray(terms...), nil
	case []string:
		terms := make([]*ast.Term, len(x))
		for i, v := range x {
			terms[i] = ast.StringTerm(v)
		}
		return ast.NewArray(terms...), nil
	case map[string][]string:
		obj := ast.NewObjectWithCapacity(len(x))
		for k, v := range x {
			val, _ := goToValue(v)
			obj.Insert(ast.StringTerm(k), ast.NewTerm(val))
		}
		return obj, nil
	case map[string][]any:
		obj := ast.NewObjectWithCapacity(len(x))
		for k, v := range x {
			val, err := goToValue(v)
			if err != nil {
				return nil, err
			}
			obj.Insert(ast.StringTerm(k), ast.NewTerm(val))
		}
		return obj, nil
	case ast.Value:
		return x, nil
	}
	// Anything else (structs, typed maps) goes through OPA's generic,
	// reflection-based conversion.
	return ast.InterfaceToValue(x)
}
