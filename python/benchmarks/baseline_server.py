"""The benchmark baseline: RankingService in Python with grpcio and onnxruntime,
written the way a Python team would (vectorised numpy, one onnxruntime
session, a thread pool), serving the same proto as the Go server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from ranker.export import artifact
from ranker_client.v1 import ranking_service_pb2 as pb
from ranker_client.v1 import ranking_service_pb2_grpc as pb_grpc


class BaselineRanker(pb_grpc.RankingServiceServicer):
    def __init__(self, model_dir: Path) -> None:
        meta = json.loads((model_dir / artifact.METADATA_JSON).read_text())
        self.name, self.version = meta["model_name"], meta["model_version"]
        self.features: list[str] = meta["feature_names"]
        self.index = {name: i for i, name in enumerate(self.features)}
        self.input = meta["onnx"]["input_name"]
        self.session = ort.InferenceSession(
            str(model_dir / artifact.MODEL_ONNX), providers=["CPUExecutionProvider"]
        )

    def Rank(self, request: pb.RankRequest, context: grpc.ServicerContext) -> pb.RankResponse:
        n = len(request.candidates)
        if n == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "candidates: at least one is required")
        given = np.array([c.features for c in request.candidates], dtype=np.float32)
        rows = np.full((n, len(self.features)), np.nan, dtype=np.float32)
        for j, name in enumerate(request.feature_names):
            if name in self.index:
                rows[:, self.index[name]] = given[:, j]
        for name, value in request.context_features.items():
            if name in self.index:
                rows[:, self.index[name]] = value
        scores = self.session.run(None, {self.input: rows})[0].reshape(-1)
        order = np.argsort(-scores, kind="stable")
        if request.top_k:
            order = order[: request.top_k]
        return pb.RankResponse(
            request_id=request.request_id,
            candidates=[
                pb.ScoredCandidate(id=request.candidates[i].id, score=float(scores[i]))
                for i in order
            ],
            model_name=self.name,
            model_version=self.version,
        )


def serve(model_dir: Path, listen: str, workers: int = 8) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb_grpc.add_RankingServiceServicer_to_server(BaselineRanker(model_dir), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(listen)
    server.start()
    print(f"baseline serving {model_dir} on {listen}", flush=True)
    server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.baseline_server", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model version directory")
    parser.add_argument("--listen", default="127.0.0.1:50052")
    args = parser.parse_args(argv)
    serve(args.model, args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
