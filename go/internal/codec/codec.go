// Package codec is the gRPC protobuf codec the server and the load
// generator use: the marshal and unmarshal code vtprotobuf generates beside
// each message (go/gen, `make proto`), where the standard codec walks every
// message by reflection. The bytes on the wire are the same protobuf; a
// message without generated code (health, reflection) goes through the
// standard library.
package codec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Name is the codec's content subtype: "proto", as the standard codec's, so
// clients see no difference.
const Name = "proto"

// vtMessage is what vtprotobuf generates for a message (features marshal,
// unmarshal and size).
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT(dst []byte) (int, error)
	UnmarshalVT(src []byte) error
}

// Codec implements encoding.CodecV2.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return Name }

// Marshal implements encoding.CodecV2. Large messages are written into a
// buffer from gRPC's pool, which gRPC returns once the bytes are sent.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMessage)
	if !ok {
		return standard().Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal implements encoding.CodecV2. The message copies what it keeps
// (strings, float slices), so the received bytes go back to gRPC's pool.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(vtMessage)
	if !ok {
		return standard().Unmarshal(data, v)
	}
	if len(data) == 1 { // the common case: one contiguous read
		return m.UnmarshalVT(data[0].ReadOnlyData())
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return m.UnmarshalVT(buf.ReadOnlyData())
}

// standard is gRPC's own protobuf codec, registered by grpc-go under the
// same name, for messages without generated code.
func standard() encoding.CodecV2 {
	return encoding.GetCodecV2(Name)
}
