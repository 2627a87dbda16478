"""Command-line plumbing shared by the workload entry points.

Bad input is a user error, not a crash: one line on stderr naming the flag and the value, exit
code 2 (argparse's own convention), no traceback and nothing started.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

EXIT_OK = 0
"""Training reached --max-steps."""
EXIT_BAD_CONFIG = 2
"""Bad flag, value or unreadable input; nothing was started."""
EXIT_PREEMPTED = 75
"""SIGTERM (spot drain, pod deletion): the step finished, a checkpoint was saved, restart to
resume. 75 is EX_TEMPFAIL from sysexits.h ("temporary failure, retry"): non-zero so torchrun
restarts the workers and a Kubernetes Job/JobSet treats the pod as failed and restarts it, and
distinct from 143 (killed by SIGTERM *without* a checkpoint) so a podFailurePolicy can match it."""


class ConfigError(ValueError):
    """A bad configuration value; ``flag`` names the command-line flag it came from."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but errors are one line (``prog: error: ...``) and exit 2, without the usage."""

    def error(self, message: str) -> NoReturn:
        die(f"{self.prog}: error: {message} (see --help)")


def die(message: str, code: int = EXIT_BAD_CONFIG) -> NoReturn:
    print(message.replace("\n", " "), file=sys.stderr, flush=True)
    raise SystemExit(code)


def exit_2_on_config_error(prog: str, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``; a ``ConfigError`` it raises (bad input found after the flags parsed: the
    data's contents, the device, memory) exits 2 with one line, like a bad flag. Raised only
    while setting up, before the first step, so nothing was trained or checkpointed."""
    try:
        return fn(*args)
    except ConfigError as e:
        die(f"{prog}: error: {e}")


def parse_s3_url(url: str, flag: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix"); ConfigError when malformed."""
    if not url.startswith("s3://"):
        raise ConfigError(flag, f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ConfigError(flag, f"{url!r} has no bucket (expected s3://BUCKET/PREFIX)")
    if any(c in bucket for c in " \\?#") or bucket != bucket.lower():
        raise ConfigError(flag, f"{url!r}: {bucket!r} is not a valid S3 bucket name")
    return bucket, prefix.strip("/")
