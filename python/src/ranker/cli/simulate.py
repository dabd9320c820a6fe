"""`ranker simulate`: readers of the news world use a running ranking server."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from ranker.cli.args import UserError, positive_float, positive_int
from ranker.data.world import START
from ranker.simulation.readers import DEFAULT_WORKERS

# How long to wait for the server to answer its health check before giving up.
CONNECT_SECONDS = 5.0


def server_address(text: str) -> str:
    """HOST:PORT, with a port from 1 to 65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def start_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _simulate(args: argparse.Namespace) -> int:
    import grpc

    from ranker.data.world import NewsWorld, WorldConfig
    from ranker.serving.client import SERVICE_NAME, RankerClient
    from ranker.simulation import simulate

    with RankerClient(args.server) as client:
        try:
            status = client.health(SERVICE_NAME, timeout=CONNECT_SECONDS)
        except grpc.RpcError as err:
            raise UserError(
                f"--server {args.server}: no ranking server answers "
                f"({err.code().name}: {err.details()})"
            ) from None
    if status != "SERVING":
        raise UserError(
            f"--server {args.server}: ranking service {status}, not SERVING (no model loaded?)"
        )
    world = NewsWorld.draw(WorldConfig.population(args.readers, args.days, args.seed))
    try:
        result = simulate(args.server, world, start=args.start, workers=args.workers)
    except grpc.RpcError as err:
        raise UserError(
            f"--server {args.server}: a call failed ({err.code().name}: {err.details()})"
        ) from None
    result.write(args.out)
    print(result.summary())
    print(f"wrote clicks, articles and truth (Parquet) to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulated readers browse through a running server; write clicks and the truth",
    )
    p.add_argument("--server", type=server_address, required=True, help="the server, HOST:PORT")
    p.add_argument("--days", type=positive_float, default=2.0, help="simulated days")
    p.add_argument("--readers", type=positive_int, default=2000, help="readers in the world")
    p.add_argument("--seed", type=int, default=1, help="the world's seed")
    p.add_argument("--out", type=Path, required=True, help="directory for the Parquet files")
    p.add_argument(
        "--start",
        type=start_time,
        default=START,
        help=f"simulated time of the first day, ISO 8601 (default {START.isoformat()})",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help="page views served at once, one channel each",
    )
    p.set_defaults(run=_simulate)
