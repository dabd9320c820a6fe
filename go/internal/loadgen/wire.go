package loadgen

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

const (
	rankMethod = "/" + "ranker.v1.RankingService" + "/Rank"
	// v2InferMethod is the KServe V2 inference protocol's ModelInfer, which
	// MLServer, Triton and KServe serve.
	v2InferMethod = "/inference.GRPCInferenceService/ModelInfer"
)

// raw is a message already encoded (a request) or not decoded (a reply).
type raw struct{ body []byte }

// rawCodec sends and receives protobuf bytes as they are.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*raw)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.body)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*raw)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	r.body = data.Materialize()
	return nil
}

// KServe V2 field numbers (grpc_predict_v2.proto).
const (
	inferRequestModelName   = 1
	inferRequestInputs      = 5
	inferRequestRawContents = 7
	tensorName              = 1
	tensorDatatype          = 2
	tensorShape             = 3
	inferResponseOutputs    = 5
)

// v2InferRequest is req's rows as one V2 ModelInfer request: an FP32 tensor
// of shape [candidates, features], packed in raw_input_contents. The model
// servers compared take the model's features in the model's order, as the
// load generator sends them.
func v2InferRequest(modelName string, req *rankerv1.RankRequest) []byte {
	n, f := len(req.GetCandidates()), len(req.GetFeatureNames())
	var tensor []byte
	tensor = protowire.AppendTag(tensor, tensorName, protowire.BytesType)
	tensor = protowire.AppendString(tensor, "input-0")
	tensor = protowire.AppendTag(tensor, tensorDatatype, protowire.BytesType)
	tensor = protowire.AppendString(tensor, "FP32")
	var shape []byte
	shape = protowire.AppendVarint(shape, uint64(n))
	shape = protowire.AppendVarint(shape, uint64(f))
	tensor = protowire.AppendTag(tensor, tensorShape, protowire.BytesType)
	tensor = protowire.AppendBytes(tensor, shape)

	values := make([]byte, 0, 4*n*f)
	for _, c := range req.GetCandidates() {
		for _, v := range c.GetFeatures() {
			values = binary.LittleEndian.AppendUint32(values, math.Float32bits(v))
		}
	}
	var out []byte
	out = protowire.AppendTag(out, inferRequestModelName, protowire.BytesType)
	out = protowire.AppendString(out, modelName)
	out = protowire.AppendTag(out, inferRequestInputs, protowire.BytesType)
	out = protowire.AppendBytes(out, tensor)
	out = protowire.AppendTag(out, inferRequestRawContents, protowire.BytesType)
	out = protowire.AppendBytes(out, values)
	return out
}

// v2Scores is the element count of a V2 ModelInfer response's first
// output tensor (the product of its shape).
func v2Scores(body []byte) (int, error) {
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		body = body[n:]
		if num != inferResponseOutputs || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, body); n < 0 {
				return 0, protowire.ParseError(n)
			}
			body = body[n:]
			continue
		}
		tensor, n := protowire.ConsumeBytes(body)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		return shapeSize(tensor)
	}
	return 0, fmt.Errorf("V2 response has no output tensor")
}

func shapeSize(tensor []byte) (int, error) {
	size, dims := 1, 0
	for len(tensor) > 0 {
		num, typ, n := protowire.ConsumeTag(tensor)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		tensor = tensor[n:]
		switch {
		case num == tensorShape && typ == protowire.BytesType: // packed
			packed, n := protowire.ConsumeBytes(tensor)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			tensor = tensor[n:]
			for len(packed) > 0 {
				d, m := protowire.ConsumeVarint(packed)
				if m < 0 {
					return 0, protowire.ParseError(m)
				}
				packed, size, dims = packed[m:], size*int(d), dims+1
			}
		case num == tensorShape && typ == protowire.VarintType:
			d, m := protowire.ConsumeVarint(tensor)
			if m < 0 {
				return 0, protowire.ParseError(m)
			}
			tensor, size, dims = tensor[m:], size*int(d), dims+1
		default:
			if n = protowire.ConsumeFieldValue(num, typ, tensor); n < 0 {
				return 0, protowire.ParseError(n)
			}
			tensor = tensor[n:]
		}
	}
	if dims == 0 {
		return 0, fmt.Errorf("V2 output tensor has no shape")
	}
	return size, nil
}
