"""The `ranker` command: generate data, train and export, query the server,
read experiments. One module per command group; each adds its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ranker.cli import data, experiments, server, train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ranker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, train, server, experiments):
        group.register(sub)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
