"""`trainyard` command line. Each subcommand lives in its own module (`trainyard/<name>.py`)
exposing `add_parser(subparsers)` and `run(args) -> int`; this file only dispatches and turns
user errors into one line on stderr with exit code 2 (no traceback)."""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from trainyard import __version__, project
from trainyard.errors import UsageError

COMMANDS = ("plan", "check", "cost", "review", "job", "preflight", "serve", "hpo")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors also exit 2, in one line
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trainyard",
                     description="Plan, policy-check, price and review the trainyard GPU "
                                 "training platform offline; render TrainJobs; preflight "
                                 "against AWS.")
    parser.add_argument("--version", action="version", version=f"trainyard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"trainyard.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"trainyard.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # A CLI run is short-lived and builds thousands of classes (the Pulumi SDKs' input types)
    # that are never freed: the cyclic GC only costs time here (~25% of a plan, +5 MB).
    gc.disable()
    # The project comes from the working directory (trainyard/project.py); put it first on
    # sys.path before any subcommand imports `components`, so a non-editable install runs the
    # checkout's program, components and policies. `--help` and `--version` work anywhere.
    try:
        root: Optional[Path] = project.find_root()
    except UsageError as e:
        root, no_project = None, e
    else:
        project.activate(root)
    from components.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        if root is None:
            raise no_project
        return int(args.func(args) or 0)
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
