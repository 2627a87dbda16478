"""Parser of `trainyard:secrets` (Secrets Manager + External Secrets Operator): see
SecretsConfig in components/config/types.py for every key and its default."""

from __future__ import annotations

import re
from typing import Optional

from components.config.reader import Reader
from components.config.types import SecretsConfig

GRAFANA_PASSWORD_SOURCES = ("generated", "operator")
# Secrets Manager names: 1-512 of letters, digits and /_+=.@- ; the prefix is followed by
# "/<secret>" and must not end in '/' itself. Kept short so IAM ARNs stay readable.
_PREFIX = re.compile(r"^[A-Za-z0-9_+=.@-]+(?:/[A-Za-z0-9_+=.@-]+)*$")


def default_prefix(stack: str) -> str:
    return f"trainyard/{stack}"


def prefix_check(value: str) -> Optional[str]:
    if len(value) > 128 or not _PREFIX.match(value):
        return ("is not a usable Secrets Manager name prefix (up to 128 letters, digits and "
                "/_+=.@-, no leading, trailing or doubled '/')")
    return None


def _secrets(r: Reader, stack: str) -> SecretsConfig:
    c = SecretsConfig(
        enabled=r.bool("enabled", True),
        prefix=r.str("prefix", None, check=prefix_check) or default_prefix(stack),
        grafana_admin_password=r.str("grafanaAdminPassword", "generated",
                                     choices=GRAFANA_PASSWORD_SOURCES),
        recovery_window_days=r.int("recoveryWindowDays", 30, min=0, max=30),
    )
    if r.parsed("recoveryWindowDays") and 0 < c.recovery_window_days < 7:
        r.error(f"{c.recovery_window_days} is not allowed (0 to delete at once, or 7-30)",
                "recoveryWindowDays")
    r.finish()
    return c
