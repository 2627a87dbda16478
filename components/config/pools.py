"""GPU pool parsing (`trainyard:gpuPools`): each pool's fields and the rules that tie them
together (capacity type, reservations, EFA, placement groups, AMI vendor, provisioner).

Rules across pools and other sections (duplicate names, team quotas, subnet capacity) are in
components/config/checks.py.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Optional

from components.compute.catalog import Catalog
from components.config.checks import RegionFacts, _az_check, _sizes, _type_check
from components.config.reader import Reader, kind, name_check
from components.config.types import (
    AMI_TYPES,
    CAPACITY_TYPES,
    DEFAULT_AMI,
    EFA_LAYOUTS,
    SYSTEM_POOL_NAME,
    CapacityReservation,
    GpuPoolConfig,
    NetworkConfig,
)
from components.services.k8s_names import PROVISIONERS

_RESERVATION_RE = re.compile(r"^cr-[0-9a-f]{8,17}$")
_LABEL_NAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESERVED_LABEL_DOMAINS = ("trainyard.io", "kubernetes.io", "k8s.io", "eks.amazonaws.com")


def _pools(root: Reader, network: NetworkConfig, catalog: Catalog, now: dt.datetime,
           facts: Optional[RegionFacts]) -> tuple[GpuPoolConfig, ...]:
    if root.raw.get("gpuPools") in (None, []):
        root.items("gpuPools")  # marks the key as read
        root.error("at least one GPU pool is required: trainyard is a GPU training platform, "
                   "and its training runtimes, team quotas and shared storage (EFS mount "
                   "targets go in the GPU pools' availability zones) are built around its pools",
                   "gpuPools")
        return ()
    # Pools live in the stack's AZs; until those parse, a pool's AZs are not judged against them.
    stack_azs = network.availability_zones if root.parsed("network.availabilityZones") else None
    return tuple(_pool(r, stack_azs, catalog, now, facts) for r in root.items("gpuPools"))


POOL_PURPOSES = ("training", "inference")


def _pool(r: Reader, stack_azs: Optional[tuple[str, ...]], catalog: Catalog, now: dt.datetime,
          facts: Optional[RegionFacts]) -> GpuPoolConfig:
    name = r.str("name", check=lambda v: name_check(v) or (
        "is reserved for the system node group" if v == SYSTEM_POOL_NAME else None))
    capacity = r.str("capacityType", "ON_DEMAND", choices=CAPACITY_TYPES)
    # A reservation (ODCR or Capacity Block) proves its type is offered where it was made, and
    # Capacity Block types are sold where the offline snapshot may not list them.
    reserved = r.raw.get("capacityReservation") is not None or \
        r.raw.get("capacityType") == "CAPACITY_BLOCK"
    types = r.str_list("instanceTypes", min_items=1,
                       check=_type_check(catalog, None if reserved else facts, accelerated=True))
    lo, want, hi = r.int("minSize", 0, min=0), r.int("desiredSize", None, min=0), \
        r.int("maxSize", min=1, max=1000)
    want = lo if want is None else want
    if r.parsed("minSize", "desiredSize", "maxSize"):
        _sizes(r, lo, want, hi)
    if stack_azs is None:
        azs = r.str_list("availabilityZones", (), min_items=1)
    else:
        azs = r.str_list("availabilityZones", stack_azs, min_items=1,
                         check=lambda v: None if v in stack_azs else
                         f"is not one of the stack's availability zones ({', '.join(stack_azs)})")
    def azs_ok() -> bool:  # asked per rule: once one rule rejects the list, later ones skip
        return r.parsed("availabilityZones") and (stack_azs is not None or
                                                  r.has("availabilityZones"))
    efa = r.bool("efa", False)
    layout = r.str("efaLayout", "current", choices=EFA_LAYOUTS)
    res_present = r.raw.get("capacityReservation") is not None
    res_r = r.child("capacityReservation")
    reservation = None
    if res_present and res_r.ok:
        reservation = CapacityReservation(
            id=res_r.str("id", check=lambda v: None if _RESERVATION_RE.match(v)
                         else "is not a capacity reservation id (cr-...)") or "",
            availability_zone=res_r.str("availabilityZone", check=_az_check(facts)) or "",
            starts_at=_timestamp(res_r, "startsAt"),
        )
    res_r.finish()

    types_ok = r.parsed("instanceTypes")
    specs = [catalog.get(t) for t in types] if types_ok else []
    vendors = {s.vendor for s in specs}
    vendor = next(iter(vendors)) if len(vendors) == 1 else None
    ami = r.str("amiType", DEFAULT_AMI.get(vendor or "nvidia"), choices=AMI_TYPES)
    default_pg = bool(efa and not res_present)
    pg = r.bool("placementGroup", default_pg)
    # Reserved capacity is sized to its reservation (a node group); elastic capacity follows
    # demand (Karpenter). Judged on the raw capacityType, like `reserved` above.
    provisioner = r.str("provisioner", "managed" if reserved else "karpenter",
                        choices=PROVISIONERS)

    # -- rules that tie fields together: each judges only fields that parsed ------------------
    if types_ok and len({s.shape for s in specs}) > 1:
        shapes = ", ".join(f"{s.name} ({s.gpus}x {s.gpu_model}, {s.max_efa} EFA)" for s in specs)
        r.error(f"mixes instance shapes ({shapes}); every type in a pool needs the same "
                "accelerator count and EFA interface count", "instanceTypes")
    if r.parsed("capacityType", "instanceTypes"):
        if capacity == "SPOT" and len(types) == 1:
            r.error(f"a SPOT pool needs at least 2 instance types of the same shape for "
                    f"diversification, got {list(types)}", "instanceTypes")
        if capacity != "SPOT" and len(types) > 1:
            r.error(f"{capacity} pools take exactly one instance type, got {list(types)}",
                    "instanceTypes")
    if efa and r.parsed("efa"):
        if r.parsed("instanceTypes"):
            for i, s in enumerate(specs):
                if not s.efa:
                    r.error(f"efa is true but {s.name!r} has no EFA support",
                            f"instanceTypes[{i}]")
        if azs_ok() and len(azs) != 1:
            r.error(f"an EFA pool must live in exactly one availability zone (NCCL over EFA "
                    f"fails across subnets), got {list(azs)}", "availabilityZones")
    if r.parsed("capacityType") and capacity == "CAPACITY_BLOCK" and not res_present:
        r.error("is required for a CAPACITY_BLOCK pool (the Capacity Block's cr- id and AZ)",
                "capacityReservation")
    if reservation is not None and reservation.starts_at is not None and \
            r.parsed("capacityType"):
        if capacity != "CAPACITY_BLOCK":
            r.error("is for Capacity Blocks (capacityType CAPACITY_BLOCK); an ODCR is active "
                    "once created", "capacityReservation.startsAt")
        elif reservation.starts_at > now and r.parsed("minSize") and lo > 0:
            r.error(f"{lo} must be 0: the Capacity Block starts "
                    f"{reservation.starts_at.isoformat()}, and no instance can launch before "
                    "then", "minSize")
    if r.parsed("capacityType") and capacity == "SPOT" and res_present:
        r.error("SPOT pools cannot target a capacity reservation", "capacityReservation")
    if res_present and azs_ok():
        if len(azs) != 1:
            r.error(f"a reserved pool must live in exactly its reservation's AZ, got {list(azs)}",
                    "availabilityZones")
        elif reservation is not None and r.parsed("capacityReservation.availabilityZone") and \
                azs[0] != reservation.availability_zone:
            r.error(f"{azs[0]!r} is not the reservation's availability zone "
                    f"{reservation.availability_zone!r}", "availabilityZones")
    if res_present and pg and r.parsed("placementGroup"):
        r.error("true is not allowed on a reserved pool: a placement group the reservation "
                "was not created with causes insufficient-capacity failures", "placementGroup")
    if pg and not efa and r.has("placementGroup") and r.parsed("placementGroup", "efa"):
        r.error("true needs efa: true (placement groups exist for EFA collectives)",
                "placementGroup")
    if vendor and ami and AMI_TYPES[ami] != vendor and r.parsed("amiType"):
        r.error(f"{ami!r} does not match the {vendor} accelerators of {list(types)}", "amiType")
    if layout != "current" and not efa and r.has("efaLayout") and r.parsed("efaLayout", "efa"):
        r.error("is set but efa is false", "efaLayout")
    if provisioner == "karpenter" and r.parsed("provisioner"):
        _karpenter_rules(r, reserved, lo, want, efa, layout, ami)

    pool = GpuPoolConfig(
        name=name or "", instance_types=types, capacity_type=capacity or "ON_DEMAND",
        min_size=lo, desired_size=want, max_size=hi, availability_zones=azs, efa=bool(efa),
        efa_layout=layout, placement_group=bool(pg), capacity_reservation=reservation,
        ami_type=ami or "AL2023_x86_64_NVIDIA",
        root_volume_gib=r.int("rootVolumeGiB", 200, min=50, max=16384),
        http_put_response_hop_limit=r.int("httpPutResponseHopLimit", 2, min=1, max=64),
        auto_repair=r.bool("autoRepair", True),
        labels=r.str_map("labels"),
        provisioner=provisioner or "managed",
        purpose=r.str("purpose", "training", choices=POOL_PURPOSES) or "training",
    )
    for key, value in pool.labels.items():
        message = _node_label_problem(key, value)
        if message:
            r.error(message, f"labels.{key}")
    r.finish()
    return pool


def _karpenter_rules(r: Reader, reserved: bool, lo: Optional[int], want: Optional[int],
                     efa: Optional[bool], layout: Optional[str], ami: Optional[str]) -> None:
    """What a Karpenter pool cannot be. `reserved` is judged on the raw keys (a reservation
    proves the pool reserved even when its id was rejected)."""
    why = "" if r.has("provisioner") else \
        " (provisioner defaults to karpenter for SPOT and ON_DEMAND pools)"
    if reserved:
        r.error("'karpenter' is for elastic pools: a reserved pool (ODCR or Capacity Block) is "
                "sized to its reservation and stays a managed node group", "provisioner")
        return
    for key, value in (("minSize", lo), ("desiredSize", want)):
        if value and r.parsed(key) and (key == "minSize" or r.has(key)):
            r.error(f"{value} must be 0 for a Karpenter pool{why}: Karpenter keeps no standing "
                    "nodes, it launches them for pending pods and removes them when empty; set "
                    "provisioner: managed to keep standing nodes", key)
    if efa and layout == "legacy" and r.parsed("efa", "efaLayout"):
        r.error(f"'legacy' cannot be built by Karpenter{why}: an EC2NodeClass takes only "
                "`interface` and `efa-only` interfaces; use current, or provisioner: managed",
                "efaLayout")
    if ami and ami.startswith("BOTTLEROCKET") and r.parsed("amiType"):
        r.error(f"{ami!r} is not built by trainyard's Karpenter pools{why}, which use the "
                "EKS AL2023 AMIs; use an AL2023 amiType, or provisioner: managed", "amiType")


def _timestamp(r: Reader, name: str) -> Optional[dt.datetime]:
    """An ISO 8601 date or date-time (UTC unless it names a zone); YAML may already have parsed
    it into a date or datetime."""
    value = r.value(name)
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            r.error(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-12-01T11:30:00Z)", name)
            return None
    else:
        r.error(f"expected an ISO 8601 date or time, got {kind(value)} {value!r}", name)
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _node_label_problem(key: str, value: str) -> Optional[str]:
    """Kubernetes label syntax, and no keys in domains the platform, EKS or the kubelet own
    (kubelet refuses to start with most `kubernetes.io` / `k8s.io` self-labels)."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME_RE.match(name) or (prefix and not _LABEL_PREFIX_RE.match(prefix)):
        return f"{key!r} is not a valid Kubernetes label key"
    if prefix and any(prefix == d or prefix.endswith("." + d) for d in _RESERVED_LABEL_DOMAINS):
        return (f"{key!r} is in a reserved label domain "
                f"({', '.join(_RESERVED_LABEL_DOMAINS)}); the platform sets those labels")
    if value and not _LABEL_NAME_RE.match(value):
        return f"{value!r} is not a valid Kubernetes label value"
    return None
