"""The `ranker` command: generate data, train and export, query the server,
read experiments. One module per command group; each adds its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import polars as pl

from ranker.cli import data, experiments, features, server, simulate, train
from ranker.cli.args import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ranker", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, features, train, server, experiments, simulate):
        group.register(sub)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (OSError, ValueError, UserError, pl.exceptions.PolarsError) as err:
        # A bad input ends in one line naming it; --debug shows where.
        if args.debug:
            raise
        print(f"ranker {args.command}: error: {err}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
