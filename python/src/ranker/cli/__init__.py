"""The `ranker` command: generate data, train and export, query the server,
read experiments. One module per command group; each adds its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
import polars as pl

from ranker.cli import data, experiments, features, server, simulate, train
from ranker.cli.args import Parser, UserError
from ranker_client.errors import from_rpc_error


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="ranker", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (data, features, train, server, experiments, simulate):
        group.register(sub)
    # --debug after the command too (`ranker train ... --debug`), where a
    # user adds it on seeing the error; SUPPRESS keeps the top-level value
    # when the subcommand's is not given.
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="as ranker --debug"
        )
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (OSError, ValueError, UserError, pl.exceptions.PolarsError, grpc.RpcError) as err:
        # A bad input or a failed call ends in one line naming it; --debug
        # shows where.
        if args.debug:
            raise
        if isinstance(err, grpc.RpcError):
            message = rpc_error_message(err, getattr(args, "target", None))
        else:
            message = str(err)
        print(f"ranker {args.command}: error: {message}", file=sys.stderr)
        return 2
    return code


def rpc_error_message(err: grpc.RpcError, target: str | None) -> str:
    """A failed call in one line: whether the server was reached, the status
    code and its message. The fields the server named (a strict request's
    unknown candidates, say) are printed one a line on stdout, for a person
    or a script, as the Go client's example does."""
    error = from_rpc_error(err)
    for violation in error.field_violations:
        print(f"refused {violation.field}: {violation.description}")
    where = f"the server at {target}" if target else "the server"
    code = f"{error.code.name} {error.reason}" if error.reason else error.code.name
    status = f"{code}: {' '.join(error.message.split())}"
    if error.code == grpc.StatusCode.UNAVAILABLE and error.error_info is None:
        # No reason attached: the server never answered (nothing listens,
        # a TLS mismatch, a name that does not resolve).
        return f"cannot reach {where} ({status})"
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {where} in time ({status})"
    return f"{where} refused the call ({status})"


if __name__ == "__main__":
    sys.exit(main())
