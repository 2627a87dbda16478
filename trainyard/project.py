"""Where the project lives: the nearest `Pulumi.yaml` at or above the working directory, found
the way the Pulumi CLI finds it, never from where this package was installed.

A plain `pip install .` (non-editable) puts `trainyard`, `components`, `policies` and `workloads`
into site-packages; those copies go stale as soon as the checkout changes. So every command
finds the checkout it is run from, and `activate` puts that checkout first on `sys.path`: the
program (`__main__.py`), `components/`, `stacks/` and `policies/` all come from there.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import yaml

from trainyard.errors import UsageError

PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml")
"""Project file names the Pulumi CLI accepts, in its order of preference."""
PROJECT_NAME = "trainyard"


def find_root(start: Optional[Path] = None) -> Path:
    """The directory of the nearest project file at or above `start` (default: the working
    directory). UsageError when there is none, or when the nearest one is another project."""
    start = Path.cwd() if start is None else Path(start)
    return _find_root(str(start.resolve()))


@functools.lru_cache(maxsize=16)
def _find_root(start: str) -> Path:
    here = Path(start)
    for directory in (here, *here.parents):
        for name in PROJECT_FILES:
            path = directory / name
            if path.is_file():
                found = _project_name(path)
                if found != PROJECT_NAME:
                    raise UsageError(f"{path} is Pulumi project {found!r}, not "
                                     f"{PROJECT_NAME!r}; run from a trainyard checkout")
                return directory
    raise UsageError(f"not inside a trainyard project: no Pulumi.yaml in {here} or any parent; "
                     "run from a checkout")


def _project_name(path: Path) -> Optional[str]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read the Pulumi project file: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


def project_root() -> Path:
    """The project the current command works on (see `find_root`)."""
    return find_root()


def activate(root: Path) -> None:
    """Import `components`, `policies` and `workloads` from `root` rather than site-packages.
    Call before anything imports them (trainyard.cli.main does it first)."""
    entry = str(root)
    if not sys.path or sys.path[0] != entry:
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
