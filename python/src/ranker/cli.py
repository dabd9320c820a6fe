"""The `ranker` command: generate data, train and export, query the server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from ranker.data import WorldConfig, generate
from ranker.v1.ranking_service_pb2 import RankRequest


def ort_library_path() -> Path:
    """The onnxruntime C library shipped inside the installed onnxruntime wheel."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so.*"))
    if not libraries:
        raise FileNotFoundError(f"no libonnxruntime.so.* in {capi}")
    return libraries[-1]


def _cmd_data(args: argparse.Namespace) -> int:
    config = WorldConfig(seed=args.seed).scaled(args.scale)
    log = generate(config)
    log.write(args.out)
    print(
        f"wrote {log.impressions.height:,} impression rows ({config.n_impressions:,} page views "
        f"of {config.n_users:,} readers) and {log.articles.height:,} articles to {args.out}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.data.is_file():
        return _train_ltr(args)
    from ranker.pipeline import summary_table, train_and_export

    trained = train_and_export(
        args.data, args.models, args.name, version=args.version, tune_trials=args.tune
    )
    print(summary_table(trained.evaluation))
    print(
        f"best iteration {trained.result.best_iteration}; "
        f"{trained.export.golden_rows} golden rows, largest |LightGBM - ONNX| "
        f"{trained.export.max_abs_diff_lgbm_onnx:.3g}"
    )
    print(f"exported {trained.export.directory} (report in {trained.export.directory}/report)")
    return 0


def _train_ltr(args: argparse.Namespace) -> int:
    from ranker.ltr import train_ltr_and_export

    if args.valid is None or args.test is None:
        raise SystemExit("training on a LibSVM file needs --valid and --test files")
    result = train_ltr_and_export(
        args.data,
        args.valid,
        args.test,
        args.models,
        args.name,
        version=args.version,
        tune_trials=args.tune,
    )
    for name, value in result.metrics.items():
        print(f"test {name}: {value:.4f}")
    print(f"best iteration {result.best_iteration}; exported {result.export.directory}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import lightgbm as lgb

    from ranker.artifact import MODEL_TXT
    from ranker.evaluate import evaluate, markdown, write_report
    from ranker.pipeline import REPORT_DIR, feature_table
    from ranker.train import time_split

    _, _, test = time_split(feature_table(args.data))
    booster = lgb.Booster(model_file=args.model / MODEL_TXT)
    evaluation = evaluate(test, booster, None)
    out = args.model / REPORT_DIR
    write_report(evaluation, out, f"Evaluation of {args.model}")
    print(markdown(evaluation, f"Evaluation of {args.model}").split("## NDCG@10 by")[0])
    print(f"report written to {out}")
    return 0


def _demo_request(data_dir: Path, top_k: int) -> tuple[RankRequest, set[str]]:
    """The first held-out impression with a click, and the ids the reader clicked."""
    from ranker.client import request_from_rows
    from ranker.pipeline import feature_table
    from ranker.train import time_split

    _, _, test = time_split(feature_table(data_dir))
    clicked_rows = test.table.filter(pl.col("clicked") == 1)
    impression = clicked_rows["impression_id"][0]
    rows = test.table.filter(pl.col("impression_id") == impression)
    clicked = set(rows.filter(pl.col("clicked") == 1)["article_id"].to_list())
    return request_from_rows(rows, request_id=f"demo-{impression}", top_k=top_k), clicked


def _cmd_rank(args: argparse.Namespace) -> int:
    from ranker.client import RankerClient, format_ranking

    request, clicked = _demo_request(args.data, args.top_k)
    with RankerClient(args.target) as client:
        print(format_ranking(client.rank(request), clicked))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ranker.client import RankerClient, format_ranking
    from ranker.server_process import ServerProcess

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


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    import json

    from ranker.benchmark import bench, markdown

    report = bench(args.scale, args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "pipeline.json").write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))
    return 0


def _cmd_stress_model(args: argparse.Namespace) -> int:
    from ranker.stress import build_stress_model

    result = build_stress_model(args.models, args.name)
    print(f"exported {result.directory} ({result.golden_rows} golden rows)")
    return 0


def _cmd_baseline_server(args: argparse.Namespace) -> int:
    from ranker.baseline_server import serve

    serve(args.model, args.listen)
    return 0


def _cmd_bench_serving(args: argparse.Namespace) -> int:
    from ranker.bench_serving import Tools, markdown, run

    repo = args.repo.resolve()
    tools = Tools(
        repo=repo,
        server=repo / "go/bin/ranker-server",
        load=repo / "go/bin/ranker-load",
        ranker=Path(sys.argv[0]).resolve(),
        ort_lib=ort_library_path(),
    )
    models = dict(item.split("=", 1) for item in args.model)
    report = run(
        tools,
        {k: Path(v).resolve() for k, v in models.items()},
        args.test_model.resolve(),
        args.out,
    )
    print(markdown(report))
    print(f"written to {args.out}/bench.md and bench.json")
    return 0


def _cmd_exposures(args: argparse.Namespace) -> int:
    from ranker.exposure import read_exposures, training_rows, variant_counts

    exposures = read_exposures(args.log)
    print(variant_counts(exposures))
    if args.clicks is not None:
        clicks = (
            pl.scan_parquet(args.clicks)
            if args.clicks.suffix == ".parquet"
            else pl.scan_ndjson(args.clicks).with_columns(
                pl.col("time").str.to_datetime(time_zone="UTC")
            )
        )
        rows = training_rows(exposures, clicks)
        rows.write_parquet(args.out)
        print(
            f"wrote {rows.height:,} training rows ({int(rows['clicked'].sum()):,} clicked) "
            f"to {args.out}"
        )
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    import json
    import shutil

    from ranker import artifact

    source = args.version_dir.resolve()
    version = source.name
    target = args.to / version
    if target.exists():
        raise SystemExit(f"{target} already exists; versions are immutable")
    args.to.mkdir(parents=True, exist_ok=True)
    staging = args.to / f".staging-{version}"
    shutil.copytree(source, staging)
    meta_path = staging / artifact.METADATA_JSON
    meta = json.loads(meta_path.read_text())
    meta["model_name"] = args.to.name
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    staging.rename(target)  # atomic: servers never see half a version
    print(f"promoted {source} to {target}")
    return 0


def _cmd_ort_lib(_: argparse.Namespace) -> int:
    print(ort_library_path())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ranker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="write the synthetic click log (Parquet)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size relative to the default 360,000 rows (28 gives about 10 million)",
    )
    p.set_defaults(run=_cmd_data)

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
        type=int,
        default=0,
        metavar="N",
        help="Optuna trials over LightGBM parameters before the final fit",
    )
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a model version on a click log's test split")
    p.add_argument("--model", type=Path, required=True, help="model version directory")
    p.add_argument("--data", type=Path, required=True, help="click-log directory")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("rank", help="send one test impression to a running server")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_cmd_rank)

    p = sub.add_parser("demo", help="start the server, rank one impression, stop it")
    p.add_argument("--server", type=Path, required=True, help="ranker-server binary")
    p.add_argument("--model", type=Path, required=True, help="model name or version directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=0, help="0 shows every candidate")
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("bench-pipeline", help="rows/s and peak memory of data, features, training")
    p.add_argument(
        "--scale",
        type=float,
        action="append",
        required=True,
        help="data scale (repeatable); 2.78 is 1 million rows, 27.8 is 10 million",
    )
    p.add_argument("--work", type=Path, default=Path("data/bench"), help="scratch directory")
    p.set_defaults(run=_cmd_bench_pipeline)

    p = sub.add_parser("stress-model", help="the 500-tree, 63-leaf, 60-feature benchmark model")
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--name", default="stress")
    p.set_defaults(run=_cmd_stress_model)

    p = sub.add_parser("baseline-server", help="the Python gRPC server benchmarks compare with")
    p.add_argument("--model", type=Path, required=True, help="model version directory")
    p.add_argument("--listen", default="127.0.0.1:50052")
    p.set_defaults(run=_cmd_baseline_server)

    p = sub.add_parser(
        "bench-serving", help="kernel and server benchmarks with ratios (make bench)"
    )
    p.add_argument("--model", action="append", required=True, help="name=version-dir, repeatable")
    p.add_argument("--test-model", type=Path, required=True, help="the model the Go tests use")
    p.add_argument("--repo", type=Path, default=Path("."))
    p.add_argument("--out", type=Path, default=Path("data/bench"))
    p.set_defaults(run=_cmd_bench_serving)

    p = sub.add_parser("exposures", help="per-variant counts of an exposure log; join clicks")
    p.add_argument("--log", type=Path, required=True, help="the server's --exposure-dir")
    p.add_argument(
        "--clicks",
        type=Path,
        help="click events (request_id, article_id, time) as Parquet or JSON lines",
    )
    p.add_argument("--out", type=Path, default=Path("training_rows.parquet"))
    p.set_defaults(run=_cmd_exposures)

    p = sub.add_parser("promote", help="publish a version (e.g. a canary) under another model name")
    p.add_argument("--version-dir", type=Path, required=True, help="models/news-canary/<version>")
    p.add_argument("--to", type=Path, required=True, help="the model directory, e.g. models/news")
    p.set_defaults(run=_cmd_promote)

    p = sub.add_parser("ort-lib", help="print the onnxruntime C library the Go server loads")
    p.set_defaults(run=_cmd_ort_lib)

    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
