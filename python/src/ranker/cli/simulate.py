"""`ranker simulate`: readers of the news world use a running ranking server."""

from __future__ import annotations

import argparse
from pathlib import Path

from ranker.cli.args import (
    UserError,
    add_tracking_options,
    iso_time,
    percent,
    positive_float,
    positive_int,
    server_address,
    tracking_uri,
)
from ranker.data.world import START
from ranker.simulation.readers import DEFAULT_WORKERS

# How long to wait for the server to answer its health check before giving up.
CONNECT_SECONDS = 5.0


def _simulate(args: argparse.Namespace) -> int:
    import grpc

    from ranker.data.world import NewsWorld, WorldConfig
    from ranker.embeddings import EmbeddingsUnavailable, embed_articles, load_encoder
    from ranker.embeddings.store import default_cache
    from ranker.features.spec import SEMANTIC_FEATURES
    from ranker.serving.client import SERVICE_NAME, RankerClient
    from ranker.simulation import simulate
    from ranker_client import RankerError
    from ranker_client.errors import from_rpc_error

    with RankerClient(args.server) as client:
        try:
            status = client.health(SERVICE_NAME, timeout=CONNECT_SECONDS)
        except RankerError as err:
            raise UserError(f"--server {args.server}: no ranking server answers ({err})") from None
        if status != "SERVING":
            raise UserError(
                f"--server {args.server}: ranking service {status}, not SERVING (no model loaded?)"
            )
        needs = set(client.model_info().feature_names)
    world = NewsWorld.draw(WorldConfig.population(args.readers, args.days, args.seed))
    embeddings = None
    if needs & set(SEMANTIC_FEATURES):
        # The model ranks by title embeddings: publish the articles with theirs.
        try:
            encoder = load_encoder()
        except EmbeddingsUnavailable as err:
            raise UserError(f"--server {args.server}: {err}") from None
        articles = world.catalog.frame(args.start)
        embeddings = embed_articles(articles, encoder, cache_dir=default_cache()).frame
    try:
        result = simulate(
            args.server, world, start=args.start, workers=args.workers, embeddings=embeddings
        )
    except grpc.RpcError as err:
        raise UserError(f"--server {args.server}: a call failed ({from_rpc_error(err)})") from None
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
        type=iso_time,
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
    register_live(sub)


def _live(args: argparse.Namespace) -> int:
    from ranker.simulation.live import LivePlan, run_live

    if args.out.exists():
        raise UserError(f"--out {args.out}: already exists; each run writes a new directory")
    if not args.server_binary.is_file():
        raise UserError(f"--server-binary {args.server_binary}: no such file (make build)")
    base = _newest_version(args.base_model)
    plan = LivePlan(
        readers=args.readers,
        days=args.days,
        warmup_days=args.warmup_days,
        seed=args.seed,
        workers=args.workers,
        canary_percent=args.canary_percent,
        exploration_percent=args.exploration_percent,
        changing=not args.stationary,
    )
    result = run_live(args.server_binary, base, args.out, plan, tracking_uri=tracking_uri(args))
    readout = result.readout
    print(
        f"after the warm-up, true NDCG@10: served {readout.served_after_warmup:.4f}, "
        f"frozen {readout.frozen_after_warmup:.4f}, oracle {readout.oracle_after_warmup:.4f}"
        + (
            f"; the loop closed {readout.gap_closed:.0%} of the gap"
            if readout.gap_closed == readout.gap_closed
            else ""
        )
    )
    print(f"serving now: {result.serving}")
    print(f"readout, night by night: {readout.page} (chart {readout.chart.name})")
    return 0


def _newest_version(path: Path) -> Path:
    """A version directory, or the newest version of a model directory."""
    if (path / "metadata.json").is_file():
        return path
    versions = sorted(p for p in path.glob("*/metadata.json") if not p.parent.name.startswith("."))
    if not versions:
        raise UserError(f"--base-model {path}: no model version (make train)")
    return versions[-1].parent


def register_live(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "live",
        help="a living newsroom: serve, retrain nightly from the server's logs, canary, decide",
    )
    p.add_argument("--server-binary", type=Path, required=True, help="the ranker-server binary")
    p.add_argument(
        "--base-model",
        type=Path,
        required=True,
        help="the model serving on day 1 (a version dir or a model dir)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="a new directory for every file of the run"
    )
    p.add_argument("--readers", type=positive_int, default=2500, help="readers in the world")
    p.add_argument(
        "--days",
        "--nights",
        type=positive_int,
        default=6,
        help="simulated days (and nights) in all",
    )
    p.add_argument(
        "--warmup-days",
        type=positive_int,
        default=2,
        help="days the base model serves alone before the first nightly retrain",
    )
    p.add_argument(
        "--exploration-percent",
        type=percent,
        default=5.0,
        help="share of page views whose top places are shuffled (logged with propensities)",
    )
    p.add_argument(
        "--stationary",
        action="store_true",
        help="a world that does not change over the run (by default topics, tastes and "
        "what readers value drift)",
    )
    p.add_argument("--seed", type=int, default=1, help="the world's seed")
    p.add_argument(
        "--canary-percent", type=positive_int, default=20, help="the canary's share of readers"
    )
    p.add_argument(
        "--workers", type=positive_int, default=DEFAULT_WORKERS, help="page views served at once"
    )
    add_tracking_options(p)
    p.set_defaults(run=_live)
