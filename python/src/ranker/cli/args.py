"""The command line's parser, whose errors are one line and a pointer to the
help; argument types that refuse out-of-range values with one line; the
error the commands raise for a bad input; and the options shared by several
commands."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn


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


def percent(text: str) -> float:
    """A share in percent, 0 to 100."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} must be a percentage from 0 to 100")
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


def server_address(text: str) -> str:
    """HOST:PORT, with a port from 1 to 65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def iso_time(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC (naive, as the click log's times)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


# A negative number is a value, not a mistyped flag.
_NUMBER = re.compile(r"^-\d+(\.\d*)?([eE][-+]?\d+)?$|^-\.\d+")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose error is one line on stderr and exit 2: what
    is wrong (a mistyped flag or command named with the closest real one, by
    difflib) and where the help is, instead of the whole usage.

    Subcommands' parsers are made by add_subparsers with this class too, so
    the top parser's class decides for the whole command line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The arguments this parser was last given, and its subcommands.
        self._given: list[str] = []
        self._commands: argparse._SubParsersAction[Parser] | None = None

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._commands = super().add_subparsers(**kwargs)
        return self._commands

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, unrecognized = self.parse_known_args(args, namespace)
        if unrecognized:
            # They reach the top parser from the subcommand that left them:
            # its flags are the ones to suggest.
            self._chosen(parsed).error(self._chosen(parsed)._unrecognized(unrecognized))
        return parsed

    def error(self, message: str) -> NoReturn:
        # A mistyped flag is the likely cause of any other complaint (a
        # required flag missing), so it is the one named.
        if unknown := self._unknown_flags():
            message = self._unrecognized(unknown)
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            choices = [str(c) for c in action.choices or ()]
            close = difflib.get_close_matches(str(value), choices, n=1)
            if isinstance(action, argparse._SubParsersAction):
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise argparse.ArgumentError(None, f"unknown command {value!r}{hint}") from None
            hint = f"did you mean {close[0]}?" if close else f"choose from {', '.join(choices)}"
            raise argparse.ArgumentError(action, f"invalid choice {value!r} ({hint})") from None

    def _chosen(self, parsed: argparse.Namespace) -> Parser:
        """The parser of the (sub)command the arguments chose."""
        parser = self
        while parser._commands is not None:
            name = getattr(parsed, parser._commands.dest, None)
            if name not in parser._commands.choices:
                break
            parser = parser._commands.choices[name]
        return parser

    def _options(self) -> list[str]:
        return [option for action in self._actions for option in action.option_strings]

    def _unknown_flags(self) -> list[str]:
        """The flags this parser was given that none of its options (nor an
        option they are a prefix of, which argparse accepts) match; a parser
        with subcommands owns only the arguments before the subcommand."""
        given = self._given
        if "--" in given:
            given = given[: given.index("--")]
        if self._commands is not None:
            values = [i for i, arg in enumerate(given) if not _is_flag(arg)]
            given = given[: values[0]] if values else given
        options = self._options()
        flags = [arg.split("=", 1)[0] for arg in given if _is_flag(arg)]
        return [flag for flag in flags if not any(o.startswith(flag) for o in options)]

    def _unrecognized(self, args: Sequence[str]) -> str:
        """`unrecognized argument --modle (did you mean --models?)`: the
        flags among `args`, each with its closest option, else the values."""
        named = []
        for flag in (arg.split("=", 1)[0] for arg in args if _is_flag(arg)):
            close = difflib.get_close_matches(flag, self._options(), n=1)
            named.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
        if not named:
            named = [repr(arg) for arg in args]
        return f"unrecognized argument{'s' if len(named) > 1 else ''} {', '.join(named)}"


def _is_flag(arg: str) -> bool:
    """`-x` or `--name[=value]`, not a negative number nor a lone `-`."""
    return arg.startswith("-") and arg != "-" and not _NUMBER.match(arg)


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
