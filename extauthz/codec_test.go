package extauthz

import (
	"bytes"
	"context"
	"math"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshward/meshward/policy"
)

// responseShapes are CheckResponses of every shape the server sends: the
// reference workload's, a dry run, Rego allows and denies carrying every
// kind of mutation and metadata value, and the internal-error deny.
func responseShapes(t testing.TB) []*authv3.CheckResponse {
	srvCfg, pol := quickstartPolicy(t)
	s := newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{})
	var out []*authv3.CheckResponse
	for _, n := range []string{"allow.json", "allow_get.json", "deny_abac.json", "deny_schema.json"} {
		resp, err := s.Check(context.Background(), loadRefRequest(t, n))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp)
	}
	mu := &policy.Mutations{
		RequestHeaders:          []policy.Header{{Name: "x-tier", Value: "gold"}},
		RemoveRequestHeaders:    []string{"x-debug"},
		ResponseHeaders:         []policy.Header{{Name: "x-served-by", Value: "meshward"}},
		QueryParametersToSet:    []policy.Header{{Name: "page", Value: "2"}},
		QueryParametersToRemove: []string{"token"},
		Body:                    `{"error":"custom"}`, HasBody: true,
		DynamicMetadata: map[string]any{
			"n": 1.5, "nan": math.NaN(), "ok": true, "nil": nil, "s": "é\x00",
			"list": []any{1.0, "two", []any{}, map[string]any{"k": false}},
			"obj":  map[string]any{"deep": map[string]any{"x": math.Copysign(0, -1)}},
		},
	}
	in := &policy.Input{Principal: spiffe("planner")}
	allow := &policy.Decision{Allow: true, Status: 200, Reason: policy.ReasonAllowed, Rule: "r", Roles: "operator", Mutations: mu}
	out = append(out, s.allowResponse(&allowMsgs{}, "id-1", in, allow))
	dry := &policy.Decision{Allow: true, DryRun: true, Status: 403, Reason: policy.ReasonMissingRole, Rule: "r"}
	out = append(out, s.allowResponse(&allowMsgs{}, "id-2", in, dry))
	deny := &policy.Decision{Status: 403, Code: "rego_denied", Reason: "rego_denied", Message: "no", Mutations: mu}
	out = append(out, s.denyResponse("id-3", deny))
	out = append(out, s.errorResponse("id-4", ReasonInternal), s.errorResponse("id-5", ReasonDeadline))
	// Fields meshward does not set today, so that a future use of them is
	// encoded too.
	extra := proto.Clone(out[4]).(*authv3.CheckResponse)
	ok := extra.GetOkResponse()
	ok.Headers[0].Append = wrapperspb.Bool(true) //nolint:staticcheck // deprecated, still on the wire
	ok.Headers[0].KeepEmptyValue = true
	ok.Headers[0].Header.RawValue = []byte("raw\xff")
	ok.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{"old": structpb.NewNumberValue(1)}} //nolint:staticcheck // deprecated, still on the wire
	extra.Status.Details = nil
	return append(out, extra, &authv3.CheckResponse{})
}

// canonical is m's deterministic encoding: two messages are the same
// message when their canonical bytes are equal (NaN included, which
// proto.Equal never finds equal).
func canonical(t testing.TB, m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip encodes m with the codec and decodes it with protobuf-go.
func roundTrip(t testing.TB, c codec, m proto.Message) proto.Message {
	data, err := c.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	defer data.Free()
	got := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(data.Materialize(), got); err != nil {
		t.Fatalf("encoding does not decode: %v", err)
	}
	return got
}

// TestCodecEncodesTheSameMessage: every response shape, encoded by the
// codec (with the generated marshallers when built with -tags
// vtprotobuf), decodes to the message that was encoded.
func TestCodecEncodesTheSameMessage(t *testing.T) {
	c := newCodec()
	for i, m := range responseShapes(t) {
		got := roundTrip(t, c, m)
		if !bytes.Equal(canonical(t, got), canonical(t, m)) {
			t.Errorf("shape %d: decoded\n%v\nwant\n%v", i, got, m)
		}
	}
	// Messages without generated code (health, reflection) go to protobuf-go.
	st := structpb.NewStringValue("x")
	if got := roundTrip(t, c, st); !proto.Equal(got, st) {
		t.Errorf("structpb value: %v", got)
	}
	if _, err := c.Marshal(struct{}{}); err == nil {
		t.Error("Marshal of a non-message succeeded")
	}
	var req authv3.CheckRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(canonical(t, loadRefRequest(t, "allow.json")))}, &req); err != nil || req.GetAttributes().GetRequest().GetHttp().GetPath() != "/v1/tasks" {
		t.Errorf("Unmarshal = %v, path %q", err, req.GetAttributes().GetRequest().GetHttp().GetPath())
	}
}

// TestCodecUsesGeneratedMarshallers: built with -tags vtprotobuf (make
// test), CheckResponse takes the generated path; without, protobuf-go's.
func TestCodecUsesGeneratedMarshallers(t *testing.T) {
	_, fast := any(&authv3.CheckResponse{}).(vtMarshaler)
	if fast != builtWithVT {
		t.Fatalf("generated marshallers in use = %v, built with -tags vtprotobuf = %v", fast, builtWithVT)
	}
	// And the codec takes that path: protobuf-go allocates three times
	// as often on the reference allow (9 allocations, against 3).
	c, allow := newCodec(), responseShapes(t)[0]
	allocs := testing.AllocsPerRun(100, func() {
		data, err := c.Marshal(allow)
		if err != nil {
			t.Fatal(err)
		}
		data.Free()
	})
	if fast && allocs > 5 {
		t.Errorf("codec allocates %.0f times on the allow response: not the generated path", allocs)
	}
}

// FuzzCodec: any CheckResponse (decoded from arbitrary bytes, so that
// every field occurs) encodes to itself. Unknown fields are discarded
// first: the generated code drops those inside a Struct, and the server's
// responses never hold any (they are built, never decoded).
func FuzzCodec(f *testing.F) {
	for _, m := range responseShapes(f) {
		f.Add(canonical(f, m))
	}
	c := newCodec()
	f.Fuzz(func(t *testing.T, data []byte) {
		var m authv3.CheckResponse
		if (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &m) != nil {
			return
		}
		got := roundTrip(t, c, &m)
		if !bytes.Equal(canonical(t, got), canonical(t, &m)) {
			t.Fatalf("decoded\n%v\nwant\n%v", got, &m)
		}
	})
}

// BenchmarkCodec compares encoding the reference allow and deny
// responses with the codec and with gRPC's proto codec.
func BenchmarkCodec(b *testing.B) {
	shapes := responseShapes(b)
	for _, c := range []struct {
		name  string
		codec interface {
			Marshal(any) (mem.BufferSlice, error)
		}
	}{{"codec", newCodec()}, {"proto", newCodec().proto}} {
		for i, name := range map[int]string{0: "allow", 3: "deny_schema"} {
			b.Run(c.name+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					data, err := c.codec.Marshal(shapes[i])
					if err != nil {
						b.Fatal(err)
					}
					data.Free()
				}
			})
		}
	}
}
