"""Typed stack configuration: one strict parse of every `trainyard:` key.

`load(raw, stack)` takes the stack file's `config:` mapping (keys like `trainyard:network`,
`aws:region`) with values already decoded from YAML, and returns a frozen `StackConfig` or raises
`ConfigError` listing every problem, each as `trainyard:<path>: <what is wrong>`: one problem per
bad value (rules that tie fields together judge only fields that parsed, see
config_reader.Reader.parsed).

Regions, availability zones and which instance types a region offers are checked against offline
data (components/data/regions.json, written by scripts/refresh_region_data.py from botocore and
moto); `trainyard preflight` checks the same things live against the account.

Nothing here touches Pulumi: `__main__.py` reads the engine's config and hands it over, and
`trainyard plan` calls the same function on the stack file before anything is synthesized.

Layout: this module holds `load` (the entry point), the offline region data lookups and the public
API; the typed dataclasses and shared constants are in components/config/types.py, the section
parsers in components/config/sections.py and components/config/pools.py (GPU pools), and the
shared value checks and rules across sections in components/config/checks.py. Every public name
of those modules is re-exported here: import from `components.config`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from components.compute.catalog import Catalog, load_catalog
from components.config.budgets import parse_budgets
from components.config.checks import PREFLIGHT_HINT as PREFLIGHT_HINT
from components.config.checks import RegionFacts, _cross_checks
from components.config.hpo import parse_hpo
from components.config.notebooks import parse_notebooks
from components.config.pools import _pools
from components.config.reader import ConfigError, Reader, kind
from components.config.registry import _registry
from components.config.secrets import _secrets
from components.config.sections import (
    _cluster,
    _kubeflow,
    _monitoring,
    _network,
    _storage,
    _team,
)
from components.config.sections import image_check as image_check
from components.config.serving import _serving
from components.config.types import AMI_TYPES as AMI_TYPES
from components.config.types import CAPACITY_TYPES as CAPACITY_TYPES
from components.config.types import DEFAULT_AMI as DEFAULT_AMI
from components.config.types import DEFAULT_INTERFACE_ENDPOINTS as DEFAULT_INTERFACE_ENDPOINTS
from components.config.types import EFA_LAYOUTS as EFA_LAYOUTS
from components.config.types import ENVIRONMENTS, NS, StackConfig
from components.config.types import FSX_THROUGHPUTS as FSX_THROUGHPUTS
from components.config.types import INTERFACE_ENDPOINTS as INTERFACE_ENDPOINTS
from components.config.types import LOG_RETENTION_DAYS as LOG_RETENTION_DAYS
from components.config.types import NAT_MODES as NAT_MODES
from components.config.types import SUPPORTED_K8S_VERSIONS as SUPPORTED_K8S_VERSIONS
from components.config.types import SYSTEM_POOL_NAME as SYSTEM_POOL_NAME
from components.config.types import CapacityReservation as CapacityReservation
from components.config.types import ClusterConfig as ClusterConfig
from components.config.types import DeployerAccess as DeployerAccess
from components.config.types import EfsConfig as EfsConfig
from components.config.types import FsxConfig as FsxConfig
from components.config.types import GpuPoolConfig as GpuPoolConfig
from components.config.types import KubeflowConfig as KubeflowConfig
from components.config.types import MonitoringConfig as MonitoringConfig
from components.config.types import NetworkConfig as NetworkConfig
from components.config.types import RegistryConfig as RegistryConfig
from components.config.types import SecretsConfig as SecretsConfig
from components.config.types import StorageConfig as StorageConfig
from components.config.types import SystemNodesConfig as SystemNodesConfig
from components.config.types import TeamConfig as TeamConfig

__all__ = ["ConfigError", "StackConfig", "load", "SUPPORTED_K8S_VERSIONS"]

REGIONS_PATH = Path(__file__).resolve().parents[1] / "data" / "regions.json"


# ----------------------------------------------------------------------------------------------
# Offline region data (RegionFacts: components/config/checks.py)
# ----------------------------------------------------------------------------------------------
# The lookups stay in this module, beside `load`, so `region_facts` calls this module's
# `region_data`: tests replace `components.config.region_data` to simulate other data.
@functools.lru_cache(maxsize=1)
def region_data() -> dict:
    with REGIONS_PATH.open() as f:
        return json.load(f)


def data_source() -> str:
    data = region_data()
    return f"offline data from moto {data['sources']['moto']}, {data['extracted']}"


@functools.lru_cache(maxsize=1)
def _botocore_regions() -> tuple[Optional[str], frozenset[str]]:
    """The installed botocore's version and region names: it may know regions newer than the
    offline data. (None, empty) without botocore."""
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.origin:
        return None, frozenset()
    from importlib import metadata

    try:
        with (Path(spec.origin).parent / "data" / "partitions.json").open() as f:
            partitions = json.load(f)["partitions"]
        version: Optional[str] = metadata.version("botocore")
    except (OSError, ValueError, KeyError, metadata.PackageNotFoundError):
        return None, frozenset()
    return version, frozenset(r for p in partitions for r in p.get("regions", {})
                              if not r.endswith("-global"))


def region_facts(region: str) -> tuple[Optional[RegionFacts], Optional[str]]:
    """(facts, None) for a known region, (None, why not) for a name that is not a region.

    A region the offline data lists without zones, or only the installed botocore knows (newer
    than the data), is accepted with no zone or offering checks."""
    data = region_data()
    checked = frozenset(data["instanceTypes"])
    if region in data["regions"]:
        entry = data["regions"][region]
        if entry is None:
            return RegionFacts(region, None, None, checked, data_source()), None
        return RegionFacts(region, frozenset(entry["azs"]),
                           {t: tuple(z) for t, z in entry["offered"].items()}, checked,
                           data_source()), None
    version, newer = _botocore_regions()
    if region in newer:
        return RegionFacts(region, None, None, checked, data_source()), None
    known = sorted(set(data["regions"]) | newer)
    close = difflib.get_close_matches(region, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "e.g. us-east-1"
    return None, (f"{region!r} is not an AWS region (not in the region list of botocore "
                  f"{version or data['sources']['botocore']}; {hint})")


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------
def load(raw: Mapping[str, Any], stack: str, catalog: Optional[Catalog] = None,
         now: Optional[dt.datetime] = None) -> StackConfig:
    """Parse a stack file's `config:` mapping. Raises ConfigError with every problem found.

    `now` (default: the current time, UTC) decides which Kubernetes versions are still in support
    and whether a Capacity Block has started."""
    catalog = catalog or load_catalog()
    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError([f"config: expected a mapping of keys, got {kind(raw)}"])
    for key in raw:
        if not isinstance(key, str):
            problems.append(f"config: key {key!r} is not a string (config keys look like "
                            f"{NS}:network)")

    ours = {k[len(NS) + 1:]: v for k, v in raw.items()
            if isinstance(k, str) and k.startswith(NS + ":")}
    root = Reader(ours, NS + ":", problems)  # keys read as `trainyard:gpuPools[0].name`

    region, facts = _region(raw.get("aws:region"), problems)

    environment = root.str("environment", choices=ENVIRONMENTS)
    tags_r = root.child("tags")
    tags = {
        "environment": environment or "",
        "owner": tags_r.str("owner"),
        "cost-center": tags_r.str("costCenter"),
        # The cost-allocation tag `trainyard cost --actual` and the budgets filter on.
        "trainyard.io/stack": stack,
    }
    extra = tags_r.str_map("extra")
    tags_r.finish()
    tags.update(extra)

    network = _network(root.child("network", required=True), facts)
    cluster = _cluster(root.child("cluster"), catalog, environment, today, facts)
    pools = _pools(root, network, catalog, now, facts)
    storage = _storage(root.child("storage"))
    monitoring = _monitoring(root.child("monitoring"))
    kubeflow = _kubeflow(root.child("kubeflow"))
    teams = tuple(_team(r) for r in root.items("teams"))
    registry, secrets = _registry(root.child("registry")), _secrets(root.child("secrets"), stack)
    # Names checked against pools and teams only when those parsed: a rejected pool name is
    # one problem, not one more for every section that mentions the pool.
    pool_names = [p.name for p in pools] if root.parsed("gpuPools") else None
    team_names = [t.name for t in teams] if root.parsed("teams") else None
    budgets = parse_budgets(root.child("budgets"), pool_names, team_names)
    notebooks = parse_notebooks(root.child("notebooks"), environment,
                                pools if root.parsed("gpuPools") else None, image_check)
    hpo = parse_hpo(root.child("hpo"), pools if root.parsed("gpuPools") else None)
    serving = _serving(root.child("serving"), pools, root.parsed("gpuPools"), monitoring,
                       teams, catalog)
    root.finish()

    _cross_checks(problems, network, cluster, pools, storage, teams, catalog)
    if problems:
        raise ConfigError(problems)
    return StackConfig(stack=stack, region=region, environment=environment, tags=tags,
                       network=network, cluster=cluster, gpu_pools=pools, storage=storage,
                       monitoring=monitoring, kubeflow=kubeflow, teams=teams,
                       registry=registry, secrets=secrets, budgets=budgets,
                       notebooks=notebooks, hpo=hpo,
                       serving=serving)


def _region(value: Any, problems: list[str]) -> tuple[str, Optional[RegionFacts]]:
    """`aws:region`: the region name and its offline facts ("" and None when rejected)."""
    if value is None:
        problems.append("aws:region: is required (e.g. us-east-1)")
        return "", None
    if not isinstance(value, str):
        problems.append(f"aws:region: expected a string, got {kind(value)} {value!r}")
        return "", None
    facts, problem = region_facts(value)
    if problem:
        problems.append(f"aws:region: {problem}")
        return "", None
    return value, facts
