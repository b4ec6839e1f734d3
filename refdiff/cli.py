"""The ``refdiff`` command line.  Each subcommand lives in a small function; errors are
reported as one line on stderr with exit status 2, never as a traceback."""

from __future__ import annotations

import argparse
import sys

from ._version import __version__

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error to report to the user as one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="refdiff",
        description="refdiff: reference implementation of diffusion models.",
    )
    p.add_argument("--version", action="version", version=f"refdiff {__version__}")
    p.add_subparsers(dest="command", metavar="COMMAND")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"refdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
