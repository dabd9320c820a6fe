"""`ranker rank`, `ranker demo` and `ranker ort-lib`: the server from the outside."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from ranker.v1.ranking_service_pb2 import RankRequest


def _demo_request(data_dir: Path, top_k: int) -> tuple[RankRequest, set[str]]:
    """The first held-out impression with a click, and the ids the reader clicked."""
    from ranker.features.build import feature_table
    from ranker.serving.client import request_from_rows
    from ranker.training.dataset import time_split

    _, _, test = time_split(feature_table(data_dir))
    clicked_rows = test.table.filter(pl.col("clicked") == 1)
    impression = clicked_rows["impression_id"][0]
    rows = test.table.filter(pl.col("impression_id") == impression)
    clicked = set(rows.filter(pl.col("clicked") == 1)["article_id"].to_list())
    return request_from_rows(rows, request_id=f"demo-{impression}", top_k=top_k), clicked


def _rank(args: argparse.Namespace) -> int:
    from ranker.serving.client import RankerClient, format_ranking

    request, clicked = _demo_request(args.data, args.top_k)
    with RankerClient(args.target) as client:
        print(format_ranking(client.rank(request), clicked))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ranker.serving.client import RankerClient, format_ranking
    from ranker.serving.process import ServerProcess, ort_library_path

    request, clicked = _demo_request(args.data, args.top_k)
    print(f"ranking {len(request.candidates)} candidates shown to reader {request.user_id}")
    with ServerProcess(args.server, args.model, ort_lib=ort_library_path()) as server:
        print(f"server healthy on {server.target}")
        with RankerClient(server.target) as client:
            info = client.model_info()
            print(f"serving {info.model_name} {info.model_version} on {info.backend}")
            print(format_ranking(client.rank(request), clicked))
    print("server stopped")
    return 0


def _ort_lib(_: argparse.Namespace) -> int:
    from ranker.serving.process import ort_library_path

    print(ort_library_path())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rank", help="send one test impression to a running server")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_rank)

    p = sub.add_parser("demo", help="start the server, rank one impression, stop it")
    p.add_argument("--server", type=Path, required=True, help="ranker-server binary")
    p.add_argument("--model", type=Path, required=True, help="model name or version directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_demo)

    p = sub.add_parser("ort-lib", help="print the onnxruntime C library the Go server loads")
    p.set_defaults(run=_ort_lib)
