"""Output files of the subcommands (`--json PATH`, `--output PATH`): checked before any work is
done, so a typo in a path costs a second, not a synthesis; written with one error format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from trainyard.errors import UsageError

STDOUT = "-"


def check_writable(path: Optional[Path]) -> None:
    """UsageError now if `path` could not be written later. None and '-' (stdout) pass."""
    if path is None or str(path) == STDOUT:
        return
    path = Path(path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"{path}: cannot write: no directory {path.parent}")
    if path.is_dir():
        raise UsageError(f"{path}: cannot write: it is a directory")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"{path}: cannot write: permission denied")


def write(path: Path, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
