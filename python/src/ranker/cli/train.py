"""`ranker train` and `ranker evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from ranker.evaluation.report import summary_table
    from ranker.pipeline import ClickLogSource, LibsvmSource, Source, train_and_export

    source: Source
    if args.data.is_file():
        if args.valid is None or args.test is None:
            raise SystemExit("training on a LibSVM file needs --valid and --test files")
        source = LibsvmSource(args.data, args.valid, args.test)
    else:
        source = ClickLogSource(args.data)
    trained = train_and_export(
        source, args.models, args.name, version=args.version, tune_trials=args.tune
    )
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
    report = f" (report in {exported.directory}/report)" if trained.evaluation is not None else ""
    print(f"exported {exported.directory}{report}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import lightgbm as lgb

    from ranker.evaluation.report import evaluate, markdown, write_report
    from ranker.export.artifact import MODEL_TXT
    from ranker.features.build import feature_table
    from ranker.pipeline import REPORT_DIR
    from ranker.training.dataset import time_split

    _, _, test = time_split(feature_table(args.data))
    booster = lgb.Booster(model_file=args.model / MODEL_TXT)
    evaluation = evaluate(test, booster, None)
    out = args.model / REPORT_DIR
    write_report(evaluation, out, f"Evaluation of {args.model}")
    print(markdown(evaluation, f"Evaluation of {args.model}").split("## NDCG@10 by")[0])
    print(f"report written to {out}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="evaluate a model version on a click log's test split")
    p.add_argument("--model", type=Path, required=True, help="model version directory")
    p.add_argument("--data", type=Path, required=True, help="click-log directory")
    p.set_defaults(run=_evaluate)
