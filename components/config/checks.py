"""Checks the section parsers share, against the offline region data and the catalog, and the
rules across sections that `components.config.load` runs once every section is parsed.

`RegionFacts` is what the offline data (components/data/regions.json) says about one region;
`components.config.region_facts` looks it up.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

from components.compute.catalog import Catalog
from components.config.reader import Reader, covers, problem_path
from components.config.types import (
    NS,
    ClusterConfig,
    GpuPoolConfig,
    NetworkConfig,
    StorageConfig,
    TeamConfig,
)
from components.network import netmath

_AZ_RE = re.compile(r"^([a-z]+(?:-[a-z]+)+-\d+)([a-z])$")
PREFLIGHT_HINT = "`trainyard preflight` checks live"


# ----------------------------------------------------------------------------------------------
# Offline region data
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionFacts:
    """What the offline data says about one region (components/data/regions.json)."""

    name: str
    azs: Optional[frozenset[str]]
    """Zone names accounts see; None: a region known to botocore without offline zone data."""
    offered: Optional[Mapping[str, tuple[str, ...]]]
    """Instance type -> zone ids offering it (ids, not names: names map to zones per account)."""
    checked_types: frozenset[str]
    """Catalog types the data was extracted for; others cannot be judged offline."""
    source: str
    """`offline data from moto X.Y.Z, <extraction date>`."""

    def offers(self, instance_type: str) -> Optional[bool]:
        """Whether any zone of the region offers the type; None when the data cannot tell."""
        if self.offered is None or instance_type not in self.checked_types:
            return None
        return bool(self.offered.get(instance_type))


# ----------------------------------------------------------------------------------------------
# Checks the section parsers share
# ----------------------------------------------------------------------------------------------
def _az_check(facts: Optional[RegionFacts]) -> Callable[[str], Optional[str]]:
    """An availability zone name of the stack's region (only its shape when the region was
    rejected; no existence check where the offline data has no zones for the region)."""
    def check(value: str) -> Optional[str]:
        m = _AZ_RE.match(value)
        if not m:
            return "is not an availability zone name (e.g. us-east-1a)"
        if facts is None:
            return None
        if m.group(1) != facts.name:
            return f"is not in region {facts.name!r}"
        if facts.azs is not None and value not in facts.azs:
            return (f"is not an availability zone of {facts.name} "
                    f"({', '.join(sorted(facts.azs))}: {facts.source}; {PREFLIGHT_HINT})")
        return None
    return check


def _type_check(catalog: Catalog, facts: Optional[RegionFacts],
                accelerated: bool = False) -> Callable[[str], Optional[str]]:
    """A catalog instance type the region offers (offline data; no offering check without
    `facts`). `accelerated`: a GPU pool's type, which must have an accelerator."""
    def check(value: str) -> Optional[str]:
        if not catalog.knows(value):
            return "is not a known instance type"
        if accelerated and not catalog.get(value).is_accelerated:
            return "has no GPU or accelerator; use cluster.systemNodes for CPU nodes"
        if facts is not None and facts.offers(value) is False:
            return f"is not offered in {facts.name} ({facts.source}; {PREFLIGHT_HINT})"
        return None
    return check


def _sizes(r: Reader, lo: Optional[int], want: Optional[int], hi: Optional[int]) -> None:
    if None in (lo, want, hi):
        return
    if lo > hi:  # type: ignore[operator]
        r.error(f"minSize {lo} is greater than maxSize {hi}", "minSize")
    elif not lo <= want <= hi:  # type: ignore[operator]
        r.error(f"{want} must lie between minSize {lo} and maxSize {hi}", "desiredSize")


# ----------------------------------------------------------------------------------------------
# Rules across sections
# ----------------------------------------------------------------------------------------------
def _cross_checks(problems: list[str], network: NetworkConfig, cluster: ClusterConfig,
                  pools: tuple[GpuPoolConfig, ...], storage: StorageConfig,
                  teams: tuple[TeamConfig, ...], catalog: Catalog) -> None:
    """Rules across sections. Each runs only when every field it reads parsed: a value that was
    already rejected (or a stand-in default for it) never produces a second problem."""
    rejected = [problem_path(p) for p in problems]  # before this function adds any

    def parsed(*paths: str) -> bool:
        return not any(covers(bad, f"{NS}:{path}") for path in paths for bad in rejected)

    def pools_parsed(*fields: str) -> bool:
        return parsed("gpuPools") or (bool(pools) and all(
            parsed(*(f"gpuPools[{i}].{f}" for f in fields)) for i in range(len(pools))))

    def dupes(names):
        return sorted({n for n in names if n and list(names).count(n) > 1})

    for n in dupes([p.name for p in pools]):
        problems.append(f"{NS}:gpuPools: pool name {n!r} is used more than once")
    for n in dupes([t.name for t in teams]):
        problems.append(f"{NS}:teams: team name {n!r} is used more than once")
    # A TrainJob takes whole nodes, so a team whose quota is below one node of every pool could
    # never run one (trainyard job render checks the chosen pool too).
    node_gpus = {p.name: catalog.get(p.instance_types[0]).gpus for p in pools
                 if p.name and p.instance_types and p.purpose == "training"} \
        if pools_parsed("name", "instanceTypes") else {}  # inference pools run no TrainJobs
    if node_gpus:
        smallest = min(node_gpus, key=lambda n: node_gpus[n])
        for i, t in enumerate(teams):
            if parsed(f"teams[{i}].gpuQuota") and t.gpu_quota < node_gpus[smallest]:
                problems.append(
                    f"{NS}:teams[{i}].gpuQuota: {t.gpu_quota} is below one node of every GPU "
                    f"pool (the smallest, {smallest!r}, has {node_gpus[smallest]} GPUs per "
                    f"node); TrainJobs take whole nodes, so team {t.name!r} could never run one")
    if storage.fsx.enabled and parsed("storage.fsx.enabled") and pools_parsed("efa") and \
            not any(p.efa for p in pools):
        problems.append(f"{NS}:storage.fsx.enabled: true needs an EFA GPU pool (FSx for Lustre "
                        "is placed in the EFA pool's availability zone)")
    if parsed("network.vpcCidr"):
        for c in cluster.public_access_cidrs:  # only the entries that parsed
            if ipaddress.ip_network(c).overlaps(ipaddress.ip_network(network.vpc_cidr)):
                problems.append(f"{NS}:cluster.publicAccessCidrs: {c!r} overlaps the VPC CIDR "
                                f"{network.vpc_cidr!r}; the public endpoint is for outside "
                                "callers")
    # Private subnets must hold the nodes (and pods) the pools may launch in them.
    if parsed("network", "cluster.systemNodes.maxSize") and pools_parsed(
            "maxSize", "instanceTypes", "efa", "efaLayout", "availabilityZones"):
        _subnet_capacity(problems, network, cluster, pools, catalog)


def _subnet_capacity(problems: list[str], network: NetworkConfig, cluster: ClusterConfig,
                     pools: tuple[GpuPoolConfig, ...], catalog: Catalog) -> None:
    try:
        plan = netmath.carve_subnets(network.vpc_cidr, network.availability_zones,
                                     network.private_subnet_prefix, network.public_subnet_prefix)
    except ValueError:
        return  # reported at network.vpcCidr
    short = []
    for az in network.availability_zones:
        need = netmath.ips_needed_in_az(az, pools, cluster.system_nodes, network, catalog)
        have = netmath.usable_addresses(plan.private[az])
        if need > have:
            short.append((az, need, have))
    if short:  # one setting is wrong, so one problem: the first short AZ, the others named
        az, need, have = short[0]
        others = ", ".join(f"{a} needs {n}" for a, n, _ in short[1:])
        problems.append(
            f"{NS}:network.privateSubnetPrefix: private subnet {plan.private[az]} in {az} "
            f"has {have} usable addresses but the pools may need {need}"
            f"{f' (also short: {others})' if others else ''}; use a larger VPC CIDR or a "
            "smaller prefix")
