"""`ranker rank`, `load`, `demo`, `replay` and `ort-lib`: the server from the outside."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import polars as pl

from ranker.cli.args import UserError, iso_time, non_negative_int, server_address
from ranker_client import RankerClient, Strictness
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


def _connect(args: argparse.Namespace) -> RankerClient:
    """A client for --target with the TLS and token options."""
    from ranker_client import TLSOptions

    tls = None
    if args.tls or args.ca or args.cert or args.key or args.server_name:
        tls = TLSOptions(
            root_ca=args.ca,
            client_cert=args.cert,
            client_key=args.key,
            server_name=args.server_name,
        )
    return RankerClient(args.target, tls=tls, token=args.token or None)


def _rank(args: argparse.Namespace) -> int:
    from ranker.serving.client import format_ranking

    strictness = Strictness.STRICT if args.strict else None
    disable_exploration = True if args.no_exploration else None
    if args.data is not None:
        if args.ids or args.user is not None or args.device or args.time is not None:
            raise UserError(
                "--data ranks its test impression as logged: no article ids, --user, "
                "--device or --time with it"
            )
        request, clicked, _ = _demo_request(args.data, args.top_k)
        with _connect(args) as client:
            reply = client.rank(
                request, strictness=strictness, disable_exploration=disable_exploration
            )
            print(format_ranking(reply, clicked))
        return 0
    if not args.ids or args.user is None:
        raise UserError("give --user and article ids (or --data DIR for a test impression)")
    with _connect(args) as client:
        reply = client.rank(
            args.user,
            args.ids,
            device=args.device,
            event_time=args.time,
            top_k=args.top_k,
            strictness=strictness,
            disable_exploration=disable_exploration,
        )
    print(format_ranking(reply))
    return 0


def _load(args: argparse.Namespace) -> int:
    from ranker.data.schema import ClickLog
    from ranker.serving.history import embeddings_for_model, load_history

    log = ClickLog.read(args.data)
    with _connect(args) as client:
        info = client.model_info()
        embeddings = embeddings_for_model(args.data, log.articles, info.feature_names)
        sent = "sent" if embeddings is not None else "not sent (the model has no semantic features)"
        until = f" before {args.until}" if args.until is not None else ""
        print(
            f"loading {args.data}{until} into {args.target}, serving {info.model_name} "
            f"{info.model_version}; article embeddings {sent}"
        )
        report = load_history(client, log, until=args.until, embeddings=embeddings, progress=True)
    print(report.summary())
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    """Start the server, give it the click log's history up to a held-out
    impression, and rank that impression by candidate ids alone."""
    import tempfile

    from ranker.data.schema import ClickLog
    from ranker.serving.client import format_ranking
    from ranker.serving.history import embeddings_for_model, load_history
    from ranker.serving.process import ServerProcess, ort_library_path

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
            report = load_history(client, log, until=first["time"], embeddings=embeddings)
            if not report.ok:
                raise ValueError(f"the server refused the log: {report.rejection_text()}")
            print(f"recorded {report.events:,} events of the log before {first['time']}")
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
    p = sub.add_parser(
        "rank",
        help="rank article ids for a reader on a running server (or a click log's test impression)",
        description="Rank candidates by id alone: the server computes their features from its "
        "catalog and the events it recorded (`ranker load`). An id the catalog does not know is "
        "scored with its article features missing, and named in the output; --strict refuses "
        "the request instead. With --data, rank the first held-out impression of a click log, "
        "sending its features.",
    )
    _add_connection_options(p)
    p.add_argument("ids", nargs="*", metavar="ARTICLE_ID", help="the candidates, by id")
    p.add_argument("--user", help="the reader's id (with ARTICLE_IDs)")
    p.add_argument("--device", default="", help="mobile, desktop or tablet (default: missing)")
    p.add_argument(
        "--time",
        type=iso_time,
        help="the moment the features describe, ISO 8601, UTC without a zone "
        "(default: the server's clock)",
    )
    p.add_argument(
        "--data", type=Path, help="instead of ids: a click log, whose test impression is ranked"
    )
    p.add_argument("--top-k", type=non_negative_int, default=0, help="0 shows every candidate")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse the request (exit 2, the refused fields on stdout) when a model feature is "
        "missing, e.g. a candidate the catalog does not know, instead of scoring it as missing",
    )
    p.add_argument(
        "--no-exploration",
        action="store_true",
        help="the model's order, never an explored one, whatever share of requests the server "
        "explores (--exploration-share); sets the request's disable_exploration",
    )
    p.set_defaults(run=_rank)

    p = sub.add_parser(
        "load",
        help="load a click log's catalog and events into a running server",
        description="Upsert a click log's articles (with their embeddings when the model has "
        "semantic features) and record its impressions and clicks in time order, in batches "
        "within the server's limits, into the server's feature state. Ends with one line: the "
        "articles, impressions and clicks the server accepted, the duplicates, and the "
        "rejections by field with a reason. Running it again records nothing twice: articles are "
        "replaced by id with the same values; events the server still remembers (within its "
        "--event-lateness, 24 h by default, of the newest event it recorded) come back as "
        "duplicates, and older ones are refused as late, with their clicks: a second load of a "
        "longer log changes no answer but exits 1, counting those refusals. A server with "
        "--auth-tokens wants a token with the roles info and ingest.",
        epilog="exit status: 0 when the server accepted everything (duplicates included); "
        "1 when it rejected some articles or events (counted in the last line); "
        "2 on an error (a bad input, the server unreachable)",
    )
    _add_connection_options(p)
    p.add_argument("--data", type=Path, required=True, help="click-log directory (ranker data)")
    p.add_argument(
        "--until",
        type=iso_time,
        help="record only the events before this time, ISO 8601, UTC without a zone "
        "(the catalog is loaded whole)",
    )
    p.set_defaults(run=_load)

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
    p.add_argument(
        "--server",
        help="host:port of a running ranker-server with empty state, or several replicas' "
        "IP:port, comma-separated (each call goes to the next: round-robin)",
    )
    p.add_argument("--server-binary", type=Path, help="start this ranker-server instead")
    p.add_argument("--model", type=Path, help="the model the started server loads")
    p.set_defaults(run=_replay)

    p = sub.add_parser("ort-lib", help="print the onnxruntime C library the Go server loads")
    p.set_defaults(run=_ort_lib)


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    """--target and how to reach it: TLS (--tls, --ca, --cert/--key,
    --server-name) and a bearer token, as the Go client's example takes them."""
    p.add_argument(
        "--target",
        type=server_address,
        default="127.0.0.1:50051",
        help="the server, HOST:PORT (default: %(default)s)",
    )
    p.add_argument("--tls", action="store_true", help="speak TLS (implied by the options below)")
    p.add_argument("--ca", type=Path, help="PEM CA bundle to verify the server (default: system)")
    p.add_argument("--cert", type=Path, help="PEM client certificate, for mutual TLS")
    p.add_argument("--key", type=Path, help="PEM key of --cert")
    p.add_argument("--server-name", help="the name in the server's certificate, if not the host")
    p.add_argument(
        "--token",
        default=os.environ.get("RANKER_TOKEN"),
        help="bearer token (default: $RANKER_TOKEN); off loopback it needs TLS",
    )
