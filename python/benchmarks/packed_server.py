"""The packed-rows peer: a plain Python grpcio + onnxruntime server taking
each request's rows as one packed float32 tensor (the KServe V2 ModelInfer
protocol with raw_input_contents, as MLServer and Triton take them), scoring
them in one onnxruntime call and ranking them with a stable numpy argsort.
Unlike benchmarks.baseline_server, it decodes no per-candidate message: this
is the fastest a Python team would reasonably serve the model."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from grpc_tools import protoc

from ranker.export import artifact

PROTO = Path(__file__).with_name("v2_inference.proto")
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def v2_messages() -> ModuleType:
    """The V2 message classes, generated from PROTO into a temporary module."""
    out = Path(tempfile.mkdtemp(prefix="ranker-v2-"))
    if protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={out}", str(PROTO)]) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    sys.path.insert(0, str(out))
    return importlib.import_module(PROTO.stem + "_pb2")


class PackedRanker:
    def __init__(self, model_dir: Path, pb: ModuleType) -> None:
        meta = json.loads((model_dir / artifact.METADATA_JSON).read_text())
        self.pb = pb
        self.name, self.version = meta["model_name"], meta["model_version"]
        self.features = len(meta["feature_names"])
        self.input = meta["onnx"]["input_name"]
        self.session = ort.InferenceSession(
            str(model_dir / artifact.MODEL_ONNX), providers=["CPUExecutionProvider"]
        )

    def infer(self, request: Any, context: grpc.ServicerContext) -> Any:
        if len(request.inputs) != 1 or len(request.raw_input_contents) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "inputs: one packed tensor expected")
        shape = tuple(request.inputs[0].shape)
        rows = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
        if len(shape) != 2 or shape[1] != self.features or rows.size != shape[0] * shape[1]:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"inputs[0].shape: {list(shape)}, want [n, {self.features}] matching the bytes",
            )
        scores = self.session.run(None, {self.input: rows.reshape(shape)})[0].reshape(-1)
        order = np.argsort(-scores, kind="stable").astype("<i4")
        n = len(scores)
        response = self.pb.ModelInferResponse(
            model_name=self.name, model_version=self.version, id=request.id
        )
        for name, datatype in (("score", "FP32"), ("order", "INT32")):
            response.outputs.add(name=name, datatype=datatype, shape=[n])
        response.raw_output_contents.extend([scores.astype("<f4").tobytes(), order.tobytes()])
        return response


def serve(model_dir: Path, listen: str, workers: int = 8) -> None:
    pb = v2_messages()
    ranker = PackedRanker(model_dir, pb)
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                ranker.infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(listen)
    server.start()
    print(f"packed-rows server serving {model_dir} on {listen}", flush=True)
    server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.packed_server", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model version directory")
    parser.add_argument("--listen", default="127.0.0.1:50053")
    args = parser.parse_args(argv)
    serve(args.model, args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
