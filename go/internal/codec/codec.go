// Package codec is the gRPC protobuf codec the server and the load
// generator use: the marshal and unmarshal code vtprotobuf generates beside
// each message (go/gen, `make proto`), where the standard codec walks every
// message by reflection. The bytes on the wire are the same protobuf. It
// marshals every message with generated code, and unmarshals RankRequest
// (the others, small or rare, go through the standard codec).
package codec

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
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

// Unmarshal implements encoding.CodecV2. RankRequest, the large message on
// the hot path, is decoded by the generated code, then its strings checked
// for valid UTF-8 as the standard codec does (the generated code does not);
// every other message goes through the standard codec. The message copies
// what it keeps, so the received bytes go back to gRPC's pool.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*rankerv1.RankRequest)
	if !ok {
		return standard().Unmarshal(data, v)
	}
	if len(data) == 1 { // one contiguous read
		return unmarshalRequest(data[0].ReadOnlyData(), req)
	}
	// A large request arrives in several buffers; the generated code needs
	// them contiguous. gRPC's pool clears every buffer it hands out (3.5 % of
	// the server's time at 1000 candidates); this one need not: the copy
	// overwrites the bytes the decoder reads, and it reads no others.
	n := data.Len()
	buf := joinBuffers.get(n)
	defer joinBuffers.put(buf)
	data.CopyTo(*buf)
	return unmarshalRequest((*buf)[:n], req)
}

// joinBuffers are the buffers a request in several pieces is joined in.
var joinBuffers = bufferPool{maxPooled: 4 << 20}

// bufferPool reuses byte buffers up to maxPooled bytes (larger ones are
// left to the garbage collector, so one huge request does not keep its
// memory), without clearing them.
type bufferPool struct {
	pool      sync.Pool
	maxPooled int
}

func (p *bufferPool) get(n int) *[]byte {
	if b, ok := p.pool.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func (p *bufferPool) put(b *[]byte) {
	if cap(*b) <= p.maxPooled {
		p.pool.Put(b)
	}
}

// unmarshalRequest decodes b into req. The generated code refuses a known
// field sent with the wrong wire type, which the standard codec keeps as
// an unknown field: on any error the standard codec decides, so every
// input is accepted or refused exactly as before.
func unmarshalRequest(b []byte, req *rankerv1.RankRequest) error {
	if err := req.UnmarshalVT(b); err != nil {
		return standardUnmarshal(b, req)
	}
	if len(req.GetContextFeatures()) > 0 {
		if err := redecodeContextFeatures(b, req); err != nil {
			return standardUnmarshal(b, req)
		}
	}
	return validUTF8(req)
}

func standardUnmarshal(b []byte, req *rankerv1.RankRequest) error {
	req.Reset()
	return proto.Unmarshal(b, req)
}

// redecodeContextFeatures decodes context_features again, by the standard
// codec. The generated code reads a map entry's value by its field number
// alone, whatever its wire type, and may read past the entry's end; the
// standard codec skips a value of the wrong type, as protobuf requires. So
// a hostile or broken client could have a context feature read as a
// different number than every other protobuf library reads. The map is a
// few entries; finding them costs one pass over the request's top-level
// fields, which skips each candidate by its length.
func redecodeContextFeatures(b []byte, req *rankerv1.RankRequest) error {
	const field = 4 // RankRequest.context_features
	var entries []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		if num == field {
			entries = append(entries, b[:n+m]...)
		}
		b = b[n+m:]
	}
	var only rankerv1.RankRequest
	if err := proto.Unmarshal(entries, &only); err != nil {
		return err
	}
	req.ContextFeatures = only.GetContextFeatures()
	return nil
}

// validUTF8 refuses a request with a string that is not UTF-8, naming it,
// as the standard codec refuses one (proto3 strings must be UTF-8).
func validUTF8(req *rankerv1.RankRequest) error {
	for _, f := range [...]struct{ name, value string }{{"request_id", req.GetRequestId()}, {"user_id", req.GetUserId()},
		{"model_name", req.GetModelName()}, {"experiment_variant", req.GetExperimentVariant()}, {"device", req.GetDevice()},
		{"model_version", req.GetModelVersion()}} {
		if !utf8.ValidString(f.value) {
			return invalidUTF8(f.name)
		}
	}
	for i, s := range req.GetFeatureNames() {
		if !utf8.ValidString(s) {
			return invalidUTF8(fmt.Sprintf("feature_names[%d]", i))
		}
	}
	for k := range req.GetContextFeatures() {
		if !utf8.ValidString(k) {
			return invalidUTF8("context_features key")
		}
	}
	for i, c := range req.GetCandidates() {
		if !utf8.ValidString(c.GetId()) {
			return invalidUTF8(fmt.Sprintf("candidates[%d].id", i))
		}
	}
	return nil
}

func invalidUTF8(field string) error {
	return fmt.Errorf("%s: string field contains invalid UTF-8", field)
}

// standard is gRPC's own protobuf codec, registered by grpc-go under the
// same name, for messages without generated code.
func standard() encoding.CodecV2 {
	return encoding.GetCodecV2(Name)
}
