"""The EKS Kubernetes version calendar: which minor versions a stack may run, and until when.

EKS gives a minor version 14 months of standard support from its EKS release, then 12 months of
extended support (billed per cluster-hour), then upgrades the control plane itself. A cluster
whose `upgradePolicy.supportType` is STANDARD is upgraded by EKS at the end of standard support,
under the program; EXTENDED keeps it (at the extended price) until extended support ends.

Sources (read 2026-11-27, no AWS API access here):
- EKS user guide "Kubernetes version lifecycle", release calendar table: 1.29-1.34.
- endoflife.date/amazon-eks (mirrors the EKS calendar): 1.35 released on EKS 2026-01-27,
  standard support to 2027-03-27.
- 1.36: EKS release 2026-06-02 per a secondary source (an operator blog), consistent with the
  first 1.36 EKS-optimized AMIs (awslabs/amazon-eks-ami, June 2026); end dates are release + 14
  / + 26 months. Approximate.
- 1.37: the first EKS-optimized AMIs for 1.37 appear in amazon-eks-ami v20261023; the EKS release
  date is not confirmed, so the end dates are estimates (release ~2026-10 + 14 / + 26 months).
`trainyard preflight` reads the live calendar (`DescribeClusterVersions`) and reports any
difference; update this table from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class EksVersion:
    version: str
    eks_release: dt.date
    end_of_standard: dt.date
    end_of_extended: dt.date
    confirmed: bool = True
    """False where the dates are estimates (see the module docstring)."""


def _d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


CALENDAR: dict[str, EksVersion] = {v.version: v for v in (
    EksVersion("1.31", _d("2024-09-26"), _d("2025-11-26"), _d("2026-11-26")),
    EksVersion("1.32", _d("2025-01-23"), _d("2026-03-23"), _d("2027-03-23")),
    EksVersion("1.33", _d("2025-05-29"), _d("2026-07-29"), _d("2027-07-29")),
    EksVersion("1.34", _d("2025-10-02"), _d("2026-12-02"), _d("2027-12-02")),
    EksVersion("1.35", _d("2026-01-27"), _d("2027-03-27"), _d("2028-03-27")),
    EksVersion("1.36", _d("2026-06-02"), _d("2027-08-02"), _d("2028-08-02"), confirmed=False),
    EksVersion("1.37", _d("2026-10-23"), _d("2027-12-23"), _d("2028-12-23"), confirmed=False),
)}

DEFAULT_VERSION = "1.36"
"""The newest minor whose EKS release is established (1.37's EKS availability is inferred from
AMI releases only, and its add-on builds are unverified): in standard support until ~2027-08."""
MINIMUM_VERSION = "1.31"
"""Kubeflow Trainer v2 needs Kubernetes >= 1.31."""
SUPPORT_TYPES = ("STANDARD", "EXTENDED")


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def support_problem(version: str, support_type: str, today: dt.date) -> Optional[str]:
    """Why `version` may not be used on `today` with `support_type`, or None.

    STANDARD: refused from the end of standard support (EKS would upgrade the control plane under
    the program). EXTENDED: allowed until the end of extended support (billed)."""
    entry = CALENDAR.get(version)
    if entry is None:
        known = ", ".join(sorted(CALENDAR, key=version_key))
        return f"is not a Kubernetes version in the EKS calendar ({known})"
    if version_key(version) < version_key(MINIMUM_VERSION):
        return f"is older than {MINIMUM_VERSION}, which Kubeflow Trainer v2 needs"
    if today >= entry.end_of_extended:
        return (f"left EKS extended support on {entry.end_of_extended.isoformat()}; use "
                f"{newest_standard(today)}")
    if today >= entry.end_of_standard and support_type != "EXTENDED":
        return (f"left EKS standard support on {entry.end_of_standard.isoformat()} (EKS would "
                f"upgrade the control plane under the program); use {newest_standard(today)}, or "
                f"set supportType: EXTENDED to stay (billed per cluster-hour until "
                f"{entry.end_of_extended.isoformat()})")
    return None


def in_standard_support(today: dt.date) -> list[str]:
    return sorted((v for v, e in CALENDAR.items()
                   if e.eks_release <= today < e.end_of_standard), key=version_key)


def newest_standard(today: dt.date) -> str:
    """The version to suggest: the default while it is in standard support, else the newest
    version that is."""
    versions = in_standard_support(today)
    if DEFAULT_VERSION in versions or not versions:
        return DEFAULT_VERSION
    return versions[-1]


def days_of_standard_support(version: str, today: dt.date) -> Optional[int]:
    entry = CALENDAR.get(version)
    return None if entry is None else (entry.end_of_standard - today).days
