"""`ranker data`: write the synthetic news world's click log."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ranker.cli.args import positive_float
from ranker.data.schema import WORLD_FILE
from ranker.data.world import WorldConfig, generate


def _data(args: argparse.Namespace) -> int:
    config = WorldConfig(seed=args.seed, changing=args.changing).scaled(args.scale)
    log = generate(config)
    log.write(args.out)
    world = {"seed": args.seed, "scale": args.scale} | asdict(config)
    if not config.changing:
        # A stationary world's description stays what it always was.
        del world["changing"]
    (args.out / WORLD_FILE).write_text(json.dumps(world, indent=1) + "\n")
    print(
        f"wrote {log.impressions.height:,} impression rows ({config.n_impressions:,} page views "
        f"of {config.n_users:,} readers) and {log.articles.height:,} articles to {args.out}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("data", help="write the synthetic click log (Parquet)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument(
        "--scale",
        type=positive_float,
        default=1.0,
        help="size relative to the default 360,000 rows (28 gives about 10 million)",
    )
    p.add_argument(
        "--changing",
        action="store_true",
        help="a world that changes over the run: topics that rise and fade, a section "
        "launched mid-run, faster taste drift, and readers who come to value other things "
        "(a frozen model decays; see ranker.data.world)",
    )
    p.set_defaults(run=_data)
