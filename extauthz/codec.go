package extauthz

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// vtMarshaler is implemented by go-control-plane's Envoy API messages when
// the program is built with -tags vtprotobuf (as `make build` does):
// generated marshalling code, about three times as fast as protobuf-go's
// reflection-driven one on a CheckResponse, whose dynamic metadata map is
// protobuf-go's slowest case.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(buf []byte) (int, error)
}

// codec is gRPC's proto codec, except that it encodes messages that
// implement vtMarshaler with their generated code. The bytes are the same
// message in protobuf's wire format (fields in number order); decoding,
// the attack surface, stays with protobuf-go. One difference: the
// generated code drops unknown fields inside a google.protobuf.Struct,
// which the server's responses never hold (they are built, not decoded).
type codec struct {
	proto encoding.CodecV2
}

func newCodec() codec {
	return codec{proto: encoding.GetCodecV2("proto")}
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMarshaler)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if err := marshalVT(m, buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if err := marshalVT(m, *buf); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// marshalVT fills buf, exactly m's size, with m.
func marshalVT(m vtMarshaler, buf []byte) error {
	n, err := m.MarshalToSizedBufferVTStrict(buf)
	if err != nil {
		return fmt.Errorf("extauthz: marshal %T: %w", m, err)
	}
	if n != len(buf) {
		return fmt.Errorf("extauthz: marshal %T: wrote %d bytes of %d", m, n, len(buf))
	}
	return nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the proto codec's: the wire format is the same.
func (codec) Name() string { return "proto" }
