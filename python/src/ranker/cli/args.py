"""Argument types that refuse out-of-range values with one line, the error
the commands raise for a bad input, and the options shared by several commands."""

from __future__ import annotations

import argparse


class UserError(Exception):
    """A bad input, told to the user in one line (no traceback)."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    """--tracking-uri and --no-tracking, for every command that records to MLflow."""
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking store for runs and the Model Registry (default: "
        "$MLFLOW_TRACKING_URI, else one SQLite store per user, whatever the working "
        "directory; `ranker tracking-uri` prints it)",
    )
    p.add_argument("--no-tracking", action="store_true", help="record nothing in MLflow")


def tracking_uri(args: argparse.Namespace) -> str | None:
    """The store the command records to; None with --no-tracking."""
    from ranker.tracking import default_tracking_uri

    if args.no_tracking:
        return None
    return str(args.tracking_uri) if args.tracking_uri else default_tracking_uri()
