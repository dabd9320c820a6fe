"""`ranker rank`, `demo`, `replay` and `ort-lib`: the server from the outside."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from ranker.cli.args import non_negative_int
from ranker_client.v1.ranking_service_pb2 import RankRequest


def _demo_request(data_dir: Path, top_k: int) -> tuple[RankRequest, set[str], int]:
    """The first held-out impression with a click (as a request with its
    features, the ids the reader clicked, and its impression id)."""
    from ranker.features.build import feature_table
    from ranker.serving.client import request_from_rows
    from ranker.training.dataset import time_split

    _, _, test = time_split(feature_table(data_dir))
    clicked_rows = test.table.filter(pl.col("clicked") == 1)
    impression = clicked_rows["impression_id"][0]
    rows = test.table.filter(pl.col("impression_id") == impression)
    clicked = {str(a) for a in rows.filter(pl.col("clicked") == 1)["article_id"]}
    request = request_from_rows(rows, request_id=f"demo-{impression}", top_k=top_k)
    return request, clicked, int(impression)


def _rank(args: argparse.Namespace) -> int:
    from ranker.serving.client import RankerClient, format_ranking

    request, clicked, _ = _demo_request(args.data, args.top_k)
    with RankerClient(args.target) as client:
        print(format_ranking(client.rank(request), clicked))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Start the server, give it the click log's history up to a held-out
    impression, and rank that impression by candidate ids alone."""
    import tempfile

    from ranker.data.schema import ClickLog
    from ranker.serving.client import RankerClient, format_ranking
    from ranker.serving.process import ServerProcess, ort_library_path
    from ranker.serving.replay import embeddings_for_model, load_history

    request, clicked, impression = _demo_request(args.data, args.top_k)
    log = ClickLog.read(args.data)
    shown = log.impressions.filter(pl.col("impression_id") == impression)
    first = shown.sort("position").row(0, named=True)
    ids = [str(a) for a in shown.sort("position")["article_id"]]
    with tempfile.TemporaryDirectory(prefix="ranker-state-") as state:
        server = ServerProcess(
            args.server, args.model, ort_lib=ort_library_path(), extra_args=[f"--state-dir={state}"]
        )
        with server, RankerClient(server.target) as client:
            print(f"server healthy on {server.target}")
            info = client.model_info()
            print(f"serving {info.model_name} {info.model_version} on {info.backend}")
            embeddings = embeddings_for_model(
                args.data, log.articles, info.feature_names, args.model
            )
            events = load_history(client, log, before=first["time"], embeddings=embeddings)
            print(f"recorded {events:,} events of the log before {first['time']}")
            print(
                f"ranking {len(ids)} candidates, by id alone, for reader {first['user_id']} "
                f"on {first['device']} at {first['time']}"
            )
            reply = client.rank(
                str(first["user_id"]),
                ids,
                device=str(first["device"]),
                event_time=first["time"],
                request_id=request.request_id,
                top_k=args.top_k,
            )
            print(format_ranking(reply, clicked))
    print("server stopped")
    return 0


def _replay(args: argparse.Namespace) -> int:
    import tempfile

    from ranker.serving.process import ServerProcess, ort_library_path
    from ranker.serving.replay import replay

    if args.server:
        report = replay(args.data, args.server)
    elif args.server_binary and args.model:
        with (
            tempfile.TemporaryDirectory(prefix="ranker-state-") as state,
            ServerProcess(
                args.server_binary,
                args.model,
                ort_lib=ort_library_path(),
                extra_args=[f"--state-dir={state}"],
            ) as server,
        ):
            report = replay(args.data, server.target, model_dir=args.model)
    else:
        raise SystemExit("replay needs --server ADDR, or --server-binary and --model to start one")
    print(report.text())
    if not report.ok:
        print("replay parity FAILED: the server's features differ from the training rows")
        return 1
    print("replay parity: every served feature row equals its training row")
    return 0


def _ort_lib(_: argparse.Namespace) -> int:
    from ranker.serving.process import ort_library_path

    print(ort_library_path())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rank", help="send one test impression to a running server")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_rank)

    p = sub.add_parser("demo", help="start the server, rank one impression, stop it")
    p.add_argument("--server", type=Path, required=True, help="ranker-server binary")
    p.add_argument("--model", type=Path, required=True, help="model name or version directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_demo)

    p = sub.add_parser(
        "replay", help="replay a click log through a server; compare its features with training"
    )
    p.add_argument("--data", type=Path, required=True, help="click-log directory")
    p.add_argument("--server", help="host:port of a running ranker-server with empty state")
    p.add_argument("--server-binary", type=Path, help="start this ranker-server instead")
    p.add_argument("--model", type=Path, help="the model the started server loads")
    p.set_defaults(run=_replay)

    p = sub.add_parser("ort-lib", help="print the onnxruntime C library the Go server loads")
    p.set_defaults(run=_ort_lib)
