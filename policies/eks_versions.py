"""The EKS Kubernetes version calendar, as data: when each minor leaves standard and extended
support. Read by `eks-version-in-standard-support` (policies/readiness.py).

EKS gives a minor 14 months of standard support from its EKS release, then 12 months of extended
support billed per cluster hour; at the end of extended support EKS upgrades the control plane
itself. `upgradePolicy.supportType: STANDARD` makes EKS upgrade at the end of standard support
instead; when `upgradePolicy` is unset the API default is EXTENDED.

Sources (re-check the first when a new minor ships, and update this table and
docs/policies.md together):
- AWS, "Understand the Kubernetes version lifecycle on EKS" (EKS User Guide,
  kubernetes-versions): the release calendar and the 14 + 12 month rule.
- endoflife.date/amazon-eks (mirrors the EKS calendar; read 2026-02): the 1.29-1.35 end dates
  below. Release dates are the EKS calendar's (end of standard support minus 14 months).
- shared/design/AWS_FACTS.md, "Learned from the 2026-11 deploy review".
Entries with `confirmed=False` come from a secondary source or are extrapolated with the 14 + 12
month rule from the first EKS AMIs; replace them with the calendar's dates once AWS publishes
them.
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple, Optional


class EksVersion(NamedTuple):
    released: date
    """Release on EKS."""
    end_of_standard: date
    """First day without standard support."""
    end_of_extended: date
    """First day without extended support (EKS then upgrades the control plane itself)."""
    confirmed: bool = True
    """False: approximate (secondary source or extrapolated)."""


CALENDAR: dict[str, EksVersion] = {
    "1.29": EksVersion(date(2024, 1, 23), date(2025, 3, 23), date(2026, 3, 23)),
    "1.30": EksVersion(date(2024, 5, 23), date(2025, 7, 23), date(2026, 7, 23)),
    "1.31": EksVersion(date(2024, 9, 26), date(2025, 11, 26), date(2026, 11, 26)),
    "1.32": EksVersion(date(2025, 1, 23), date(2026, 3, 23), date(2027, 3, 23)),
    "1.33": EksVersion(date(2025, 5, 29), date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": EksVersion(date(2025, 10, 2), date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": EksVersion(date(2026, 1, 27), date(2027, 3, 27), date(2028, 3, 27)),
    # Secondary source; dates approximate until the EKS calendar lists them.
    "1.36": EksVersion(date(2026, 6, 2), date(2027, 8, 2), date(2028, 8, 2), confirmed=False),
    # Unconfirmed: first EKS AMIs 2026-10-23; standard end ~2027-12 by the 14-month rule.
    "1.37": EksVersion(date(2026, 10, 23), date(2027, 12, 23), date(2028, 12, 23),
                       confirmed=False),
}


def minor(version: object) -> Optional[str]:
    """"1.33" for "1.33", "1.33.4" or "v1.33"; None for anything else."""
    parts = str(version).strip().lstrip("v").split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return f"{int(parts[0])}.{int(parts[1])}"


def _key(v: str) -> tuple[int, int]:
    major, minor_ = v.split(".")
    return int(major), int(minor_)


def in_standard_support(on: date) -> list[str]:
    """The calendar's minors released and still in standard support on `on`, oldest first."""
    return sorted((v for v, e in CALENDAR.items() if e.released <= on < e.end_of_standard),
                  key=_key)


def next_in_standard_support(current: str, on: date) -> Optional[str]:
    """The oldest minor newer than `current` that is in standard support on `on`."""
    newer = [v for v in in_standard_support(on) if _key(v) > _key(current)]
    return newer[0] if newer else None
