"""A small strict reader for nested config mappings.

Every accessor records problems as ``"<path>: <message>"`` instead of raising, so a parse can
report every mistake at once. Keys that are never read are reported as unknown by ``finish()``.

A value that is rejected reads as if it were absent: ``None`` for a required key, the default
for an optional one. Rules that tie several fields together must not judge such stand-ins, so
they ask ``parsed(...)`` first: a field parsed when no problem was recorded at it, under it, or
at a mapping or list that contains it. A mapping that is not a mapping is reported once; the
reader for it is muted (its keys are not reported again as missing or unknown).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar

T = TypeVar("T")

REQUIRED: Any = object()


class ConfigError(Exception):
    """Every problem found in a stack's config, each one line naming its key path."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def problem_path(problem: str) -> str:
    """The key path a problem line names (`trainyard:gpuPools[0].maxSize: is required`)."""
    return problem.split(": ", 1)[0]


def covers(path: str, where: str) -> bool:
    """Whether a problem recorded at `path` concerns the field at `where`: the same field, a part
    of it, or a mapping or list that contains it."""
    return path == where or path.startswith((where + ".", where + "[")) or \
        where.startswith((path + ".", path + "["))


class Reader:
    """Reads one mapping at ``path``; child readers share the problem list."""

    def __init__(self, raw: Any, path: str, problems: list[str], muted: bool = False):
        self.path = path
        self.problems = problems
        self.muted = muted
        self.ok = isinstance(raw, dict) and not muted
        if raw is not None and not isinstance(raw, dict):
            self.error(f"expected a mapping, got {kind(raw)}")
            self.muted = True
        self.raw: dict = raw if self.ok else {}
        self._seen: set[Any] = set()

    # -- reporting -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        # A root reader's path is a namespace ("trainyard:"), nested ones a dotted path.
        if not self.path or self.path.endswith(":"):
            return f"{self.path}{name}"
        return f"{self.path}.{name}"

    def error(self, message: str, key: Optional[str] = None) -> None:
        if self.muted:  # the mapping itself was rejected: one problem is enough
            return
        where = self.key(key) if key is not None else self.path
        self.problems.append(f"{where}: {message}")

    def has(self, name: str) -> bool:
        return name in self.raw

    def parsed(self, *names: str) -> bool:
        """Whether every named field (a key, or a dotted path under this mapping) parsed: no
        problem recorded at it, under it, or at anything containing it."""
        if self.muted:
            return False
        paths = [problem_path(p) for p in self.problems]
        return not any(covers(path, self.key(name)) for name in names for path in paths)

    # -- scalars ---------------------------------------------------------------------------
    def _get(self, name: str, default: Any) -> tuple[Any, bool]:
        self._seen.add(name)
        if name not in self.raw or self.raw[name] is None:
            if default is REQUIRED:
                self.error("is required", name)
            return default, False
        return self.raw[name], True

    def str(self, name: str, default: Any = REQUIRED, choices: Optional[Iterable[str]] = None,
            check: Optional[Callable[[str], Optional[str]]] = None) -> Any:
        value, present = self._get(name, default)
        if not present:
            return None if value is REQUIRED else value
        if not isinstance(value, str):
            self.error(f"expected a string, got {kind(value)} {value!r}", name)
            return None if default is REQUIRED else default
        if default is REQUIRED and not value.strip():
            self.error(f"is required (got {value!r})", name)
            return None
        if choices is not None and value not in choices:
            self.error(f"{value!r} is not one of {', '.join(sorted(choices))}", name)
            return None if default is REQUIRED else default
        if check is not None:
            message = check(value)
            if message:
                self.error(f"{value!r} {message}", name)
                return None if default is REQUIRED else default
        return value

    def int(self, name: str, default: Any = REQUIRED, min: Optional[int] = None,
            max: Optional[int] = None) -> Any:
        value, present = self._get(name, default)
        if not present:
            return None if value is REQUIRED else value
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(f"expected an integer, got {kind(value)} {value!r}", name)
            return None if default is REQUIRED else default
        if min is not None and value < min:
            self.error(f"{value} is below the minimum {min}", name)
            return None if default is REQUIRED else default
        if max is not None and value > max:
            self.error(f"{value} is above the maximum {max}", name)
            return None if default is REQUIRED else default
        return value

    def bool(self, name: str, default: Any = REQUIRED) -> Any:
        value, present = self._get(name, default)
        if not present:
            return None if value is REQUIRED else value
        if not isinstance(value, bool):
            self.error(f"expected true or false, got {kind(value)} {value!r}", name)
            return None if default is REQUIRED else default
        return value

    def str_list(self, name: str, default: Any = REQUIRED, min_items: int = 0,
                 check: Optional[Callable[[str], Optional[str]]] = None) -> Any:
        value, present = self._get(name, default)
        if not present:
            return () if value is REQUIRED else tuple(value)
        if not isinstance(value, list):
            self.error(f"expected a list of strings, got {kind(value)} {value!r}", name)
            return () if default is REQUIRED else tuple(default)
        out: list[str] = []
        for i, item in enumerate(value):
            where = f"{name}[{i}]"
            if not isinstance(item, str):
                self.error(f"expected a string, got {kind(item)} {item!r}", where)
                continue
            if check is not None:
                message = check(item)
                if message:
                    self.error(f"{item!r} {message}", where)
                    continue
            out.append(item)
        if len(value) < min_items and len(out) == len(value):  # not counting rejected items
            self.error(f"needs at least {min_items} item(s), got {len(value)}", name)
        dupes = sorted({x for x in out if out.count(x) > 1})
        if dupes:
            self.error(f"duplicate entries {dupes}", name)
        return tuple(out)

    def str_map(self, name: str) -> dict[str, str]:
        value, present = self._get(name, {})
        if not present:
            return {}
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.error(f"expected a mapping of strings to strings, got {value!r}", name)
            return {}
        return dict(value)

    # -- nesting ---------------------------------------------------------------------------
    def child(self, name: str, required: bool = False) -> Reader:
        """The mapping at `name` (absent: empty, or a problem when `required`)."""
        value, present = self._get(name, REQUIRED if required else None)
        return Reader(value if present else {}, self.key(name), self.problems,
                      muted=self.muted or (required and not present))

    def items(self, name: str, required: bool = False) -> list[Reader]:
        value, present = self._get(name, REQUIRED if required else [])
        if not present:
            return []
        if not isinstance(value, list):
            self.error(f"expected a list, got {kind(value)}", name)
            return []
        return [Reader(item, f"{self.key(name)}[{i}]", self.problems, muted=self.muted)
                for i, item in enumerate(value)]

    def value(self, name: str, default: Any = None) -> Any:
        """The raw value at `name` (marked as read), for a parser that judges it itself."""
        self._seen.add(name)
        return self.raw.get(name, default)

    def ignore_rest(self) -> None:
        """Mark every key as read: their mapping was already refused as a whole, and one
        problem is enough."""
        self._seen.update(self.raw)

    def finish(self) -> None:
        allowed = ", ".join(sorted(map(str, self._seen)))
        for extra in sorted(set(self.raw) - self._seen, key=str):
            self.error(f"unknown key (allowed: {allowed})", str(extra))


# -- value checks (return a message or None) ----------------------------------------------
def cidr_check(value: str) -> Optional[str]:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "is not a valid IPv4 CIDR block (host bits must be zero)"
    if net.version != 4:
        return "is not an IPv4 CIDR block"
    return None


def name_check(value: str) -> Optional[str]:
    ok = 1 <= len(value) <= 24 and value[0].isalpha() and all(
        c.islower() or c.isdigit() or c == "-" for c in value) and not value.endswith("-")
    return None if ok else "must be 1-24 lowercase letters, digits or '-', starting with a letter"
