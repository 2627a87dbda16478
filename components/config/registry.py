"""Parser of `trainyard:registry` (the stack's ECR repositories): see RegistryConfig in
components/config/types.py for every key and its default."""

from __future__ import annotations

import re
from typing import Optional

from components.config.reader import Reader, kind
from components.config.types import RegistryConfig

SCANNING_MODES = ("basic", "enhanced")
# ECR repository names (CreateRepository API reference): 2-256 characters, lowercase path
# components separated by '/', each of letters/digits joined by single '.', '_' or '-'.
_REPOSITORY_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_ROLE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")


def repository_name_check(value: str) -> Optional[str]:
    if not 2 <= len(value) <= 256 or not _REPOSITORY_NAME.match(value):
        return ("is not a valid ECR repository name (2-256 lowercase letters, digits and single "
                "'.', '_', '-' or '/' between them)")
    return None


def _repositories(r: Reader) -> dict[str, str]:
    default = dict(RegistryConfig().repositories)
    value, present = r._get("repositories", None)  # marks the key as read
    if not present:
        return default
    if not isinstance(value, dict) or not value:
        r.error(f"expected a mapping of role to repository name, got {kind(value)} {value!r}",
                "repositories")
        return default
    out: dict[str, str] = {}
    for role, name in value.items():
        where = f"repositories.{role}"
        if not isinstance(role, str) or not _ROLE.match(role):
            r.error("role must be 1-24 lowercase letters, digits or '-', starting with a letter",
                    where)
            continue
        if not isinstance(name, str):
            r.error(f"expected a repository name, got {kind(name)} {name!r}", where)
            continue
        problem = repository_name_check(name)
        if problem:
            r.error(f"{name!r} {problem}", where)
            continue
        out[role] = name
    dupes = sorted({n for n in out.values() if list(out.values()).count(n) > 1})
    if dupes:
        r.error(f"two roles name the same repository {dupes}", "repositories")
    return out


def _registry(r: Reader) -> RegistryConfig:
    c = RegistryConfig(
        enabled=r.bool("enabled", True),
        repositories=_repositories(r),
        scanning=r.str("scanning", "basic", choices=SCANNING_MODES),
        keep_untagged=r.int("keepUntagged", 10, min=1, max=1000),
    )
    r.finish()
    return c
