"""`trainyard preflight --stack S`: check the catalog and the stack's assumptions against the
live EC2 API before a deploy (needs AWS credentials; read-only calls).

Checks, per instance type the stack uses: GPU count and memory, vCPUs, network cards and the EFA
maximum agree with the catalog; every AZ a pool may use offers the type; capacity reservations
exist in the AZ the config says. Also compares each pool's vCPU demand at max size with the
regional quotas that gate GPU pools (Running On-Demand P instances L-417A185B, All P Spot
Instance Requests L-7212CCBC) when Service Quotas answers, and that every pinned EKS add-on
version (components/data/addons.yaml, and the FSx CSI driver where FSx is on) is offered for
the stack's Kubernetes version, and that the Kubernetes version is offered and in the support
the stack expects (`DescribeClusterVersions`), with the live end-of-support dates compared to
components/compute/eks_versions.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from components.compute.catalog import Catalog, InstanceType, load_catalog
from components.config import StackConfig
from trainyard.errors import UsageError
from trainyard.plan import add_stack_args, stack_of

# vCPU quotas that gate P-family pools (values are vCPUs, not instances).
QUOTAS = {"ON_DEMAND": "L-417A185B", "SPOT": "L-7212CCBC"}
GPU_MEMORY_TOLERANCE = 0.10
"""The EC2 API reports usable MiB (A10G: 22,888 MiB for a '24 GB' card)."""


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    ok: bool
    detail: str


def compare_instance(spec: InstanceType, live: dict) -> list[Finding]:
    """Catalog entry vs one DescribeInstanceTypes item. Pure."""
    net = live.get("NetworkInfo", {})
    gpus = live.get("GpuInfo", {}).get("Gpus", []) or live.get("NeuronInfo", {}).get(
        "NeuronDevices", [])
    live_gpus = sum(int(g.get("Count", 0)) for g in gpus)
    pairs = [
        ("vCPUs", spec.vcpus, live.get("VCpuInfo", {}).get("DefaultVCpus")),
        ("memory GiB", spec.memory_gib, live.get("MemoryInfo", {}).get("SizeInMiB", 0) // 1024),
        ("network cards", spec.network_cards, net.get("MaximumNetworkCards", 1)),
        ("max EFA interfaces", spec.max_efa, (net.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)),
        ("accelerators", spec.gpus, live_gpus),
    ]
    out = [Finding("catalog", spec.name, want == got,
                   f"{what}: catalog {want}, EC2 {got}") for what, want, got in pairs]
    if spec.accelerator and gpus and "MemoryInfo" in gpus[0]:
        live_gib = gpus[0]["MemoryInfo"]["SizeInMiB"] / 1024
        ok = abs(live_gib - spec.accelerator.memory_gib) <= GPU_MEMORY_TOLERANCE * spec.accelerator.memory_gib
        out.append(Finding("catalog", spec.name, ok,
                           f"memory per accelerator: catalog {spec.accelerator.memory_gib} GiB, "
                           f"EC2 {live_gib:.1f} GiB"))
    return out


def vcpu_demand(cfg: StackConfig, catalog: Catalog) -> dict[str, int]:
    """vCPUs the P-family pools need at max size, by quota bucket. Pure."""
    demand = {"ON_DEMAND": 0, "SPOT": 0}
    for pool in cfg.gpu_pools:
        bucket = "SPOT" if pool.capacity_type == "SPOT" else "ON_DEMAND"
        if pool.capacity_type == "CAPACITY_BLOCK":
            continue  # Capacity Blocks are not counted against the On-Demand quota
        widest = max(catalog.get(t).vcpus for t in pool.instance_types)
        if all(catalog.get(t).family.startswith("p") for t in pool.instance_types):
            demand[bucket] += widest * pool.max_size
    return demand


def pinned_addons(cfg: StackConfig) -> dict[str, str]:
    """Add-on name -> the exact version the stack installs. Pure."""
    from components.compute.addons import addon_pins
    from components.storage.fsx import FSX_CSI_ADDON, FSX_CSI_ADDON_VERSION

    pins = {p.name: p.version for p in addon_pins(cfg.cluster.kubernetes_version)}
    if cfg.storage.fsx.enabled:
        pins[FSX_CSI_ADDON] = FSX_CSI_ADDON_VERSION
    return pins


def addon_findings(pins: dict[str, str], kubernetes_version: str, eks: Any) -> list[Finding]:
    """Each pin against DescribeAddonVersions for the cluster's Kubernetes version."""
    out = []
    for name, version in sorted(pins.items()):
        try:
            offered = [v["addonVersion"]
                       for page in eks.get_paginator("describe_addon_versions").paginate(
                           addonName=name, kubernetesVersion=kubernetes_version)
                       for addon in page["addons"] for v in addon["addonVersions"]]
        except Exception as e:  # noqa: BLE001 - an API refusal is a failed check, shown as such
            out.append(Finding("addon", name, False,
                               f"could not list versions: {str(e).splitlines()[0]}"))
            continue
        ok = version in offered
        detail = f"{version} for Kubernetes {kubernetes_version}"
        if not ok:
            detail += (f" is not offered (offered: {', '.join(offered[:3])}"
                       f"{', ...' if len(offered) > 3 else ''})" if offered else
                       " is not offered (no versions at all for this Kubernetes version)")
        out.append(Finding("addon", name, ok, detail))
    return out


def _day(value: Any) -> Optional[dt.date]:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date()
    if isinstance(value, dt.date):
        return value
    return None


def version_findings(version: str, support_type: str, eks: Any,
                     today: Optional[dt.date] = None) -> list[Finding]:
    """The stack's Kubernetes version against `DescribeClusterVersions`: offered, in the support
    the stack runs under, and with the end dates components/compute/eks_versions.py assumes; plus the
    newest version EKS offers in standard support, when the stack is behind it."""
    from components.compute import eks_versions

    today = today or dt.datetime.now(dt.UTC).date()
    try:
        live = {v["clusterVersion"]: v
                for page in eks.get_paginator("describe_cluster_versions").paginate(
                    clusterType="eks", includeAll=True)
                for v in page.get("clusterVersions", [])}
    except Exception as e:  # noqa: BLE001 - an API refusal is a failed check, shown as such
        return [Finding("version", version, False,
                        f"could not list EKS versions: {str(e).splitlines()[0]}")]
    item = live.get(version)
    if item is None:
        return [Finding("version", version, False,
                        f"EKS does not offer Kubernetes {version} (offered: "
                        f"{', '.join(sorted(live, key=eks_versions.version_key))})")]
    out = []
    status = item.get("versionStatus") or item.get("status") or "?"
    standard_end = _day(item.get("endOfStandardSupportDate"))
    extended_end = _day(item.get("endOfExtendedSupportDate"))
    in_standard = standard_end is None or today < standard_end
    in_extended = extended_end is None or today < extended_end
    ok = in_standard or (support_type == "EXTENDED" and in_extended)
    detail = f"Kubernetes {version}: {status}"
    if standard_end:
        detail += f", standard support until {standard_end.isoformat()}"
    if not ok:
        detail += (" (past it: set a newer kubernetesVersion, or supportType EXTENDED)"
                   if in_extended else " (past extended support too)")
    out.append(Finding("version", version, ok, detail))
    ours = eks_versions.CALENDAR.get(version)
    if ours and standard_end and ours.end_of_standard != standard_end:
        out.append(Finding("version", version, False,
                           f"components/compute/eks_versions.py says standard support ends "
                           f"{ours.end_of_standard.isoformat()}, EKS says "
                           f"{standard_end.isoformat()}: update the calendar"))
    standard = [v for v, i in live.items()
                if _day(i.get("endOfStandardSupportDate")) is None
                or today < _day(i.get("endOfStandardSupportDate"))]  # type: ignore[operator]
    if standard:
        newest = max(standard, key=eks_versions.version_key)
        if eks_versions.version_key(newest) > eks_versions.version_key(version):
            out.append(Finding("version", newest, True,
                               f"Kubernetes {newest} is the newest in standard support "
                               f"(the stack runs {version})"))
    return out


def run_checks(cfg: StackConfig, session: Any, catalog: Optional[Catalog] = None) -> list[Finding]:
    from botocore.config import Config

    catalog = catalog or load_catalog()
    retry = Config(region_name=cfg.region, retries={"max_attempts": 8, "mode": "adaptive"})
    ec2 = session.client("ec2", config=retry)
    types = sorted({t for p in cfg.gpu_pools for t in p.instance_types} |
                   set(cfg.cluster.system_nodes.instance_types))
    findings: list[Finding] = []

    live = {}
    for chunk in _chunks(types, 100):
        for item in ec2.describe_instance_types(InstanceTypes=chunk)["InstanceTypes"]:
            live[item["InstanceType"]] = item
    for t in types:
        if t not in live:
            findings.append(Finding("catalog", t, False, f"{cfg.region} does not offer {t}"))
        else:
            findings.extend(compare_instance(catalog.get(t), live[t]))

    offered: dict[str, set[str]] = {}
    paginator = ec2.get_paginator("describe_instance_type_offerings")
    for page in paginator.paginate(LocationType="availability-zone",
                                   Filters=[{"Name": "instance-type", "Values": types}]):
        for o in page["InstanceTypeOfferings"]:
            offered.setdefault(o["InstanceType"], set()).add(o["Location"])
    for pool in cfg.gpu_pools:
        for t in pool.instance_types:
            for az in pool.availability_zones:
                findings.append(Finding("offering", f"{pool.name}/{t}", az in offered.get(t, set()),
                                        f"{t} in {az}"))

    for pool in cfg.gpu_pools:
        res = pool.capacity_reservation
        if res is None:
            continue
        try:
            got = ec2.describe_capacity_reservations(CapacityReservationIds=[res.id])
            items = got.get("CapacityReservations", [])
        except Exception as e:  # noqa: BLE001 - any API refusal is a failed check, shown as such
            items, err = [], str(e).splitlines()[0]
        else:
            err = "not found"
        if not items:
            findings.append(Finding("reservation", pool.name, False, f"{res.id}: {err}"))
            continue
        item = items[0]
        findings.append(Finding("reservation", pool.name,
                                item.get("AvailabilityZone") == res.availability_zone,
                                f"{res.id} is in {item.get('AvailabilityZone')}, config says "
                                f"{res.availability_zone}"))
        findings.append(Finding("reservation", pool.name,
                                item.get("InstanceType") == pool.instance_types[0],
                                f"{res.id} reserves {item.get('InstanceType')}"))

    eks = session.client("eks", config=retry)
    findings.extend(version_findings(cfg.cluster.kubernetes_version, cfg.cluster.support_type,
                                     eks))
    findings.extend(addon_findings(pinned_addons(cfg), cfg.cluster.kubernetes_version, eks))

    quotas = session.client("service-quotas", config=retry)
    for bucket, need in vcpu_demand(cfg, catalog).items():
        if not need:
            continue
        try:
            value = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=QUOTAS[bucket])["Quota"]["Value"]
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            findings.append(Finding("quota", QUOTAS[bucket], False,
                                    f"could not read the quota: {str(e).splitlines()[0]}"))
            continue
        findings.append(Finding("quota", QUOTAS[bucket], value >= need,
                                f"{bucket} P-family pools need {need} vCPUs at max size, "
                                f"quota is {int(value)}"))
    findings.extend(cost_tag_findings(session.client("ce", region_name="us-east-1",
                                                     config=retry)))
    return findings


def cost_tag_findings(ce: Any) -> list[Finding]:
    """The cost-allocation tags `trainyard cost --actual` and the budgets filter on must be
    active in billing (a tag becomes selectable a day after it is first seen on a resource)."""
    from trainyard.cost_actual import POOL_TAG, STACK_TAG

    keys = [STACK_TAG, POOL_TAG]
    try:
        resp = ce.list_cost_allocation_tags(TagKeys=keys)
    except Exception as e:  # noqa: BLE001 - member accounts may not read billing settings
        return [Finding("cost-tags", ", ".join(keys), False,
                        f"could not read the cost-allocation tags: {str(e).splitlines()[0]} "
                        "(the payer account activates them)")]
    status = {t["TagKey"]: t.get("Status") for t in resp.get("CostAllocationTags", [])}
    return [Finding("cost-tags", k, status.get(k) == "Active",
                    f"cost-allocation tag {k} is {status.get(k, 'not seen yet').lower()}"
                    + ("" if status.get(k) == "Active" else
                       ": activate it (trainyard:budgets.activateCostAllocationTags in a payer "
                       "account, or `aws ce update-cost-allocation-tags-status`)"))
            for k in keys]


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def add_parser(sub) -> None:
    p = sub.add_parser("preflight", help="check catalog, offerings, reservations and quotas "
                                         "against the live EC2 API (needs AWS credentials)",
                       description="Before a deploy, compare the stack with the live AWS APIs "
                                   "of its region: the instance catalog's facts, instance "
                                   "offerings per AZ, capacity reservations, vCPU quotas, the "
                                   "Kubernetes version and every add-on pin. Needs AWS "
                                   "credentials; exit 1 when a check fails.")
    add_stack_args(p)
    p.add_argument("--profile", help="AWS profile to use")
    p.set_defaults(func=run)


def run(args) -> int:
    import boto3
    import botocore.exceptions

    from trainyard.synth import load_config

    stack, stack_file = stack_of(args)
    cfg = load_config(stack, stack_file)
    session = boto3.Session(profile_name=args.profile, region_name=cfg.region)
    if session.get_credentials() is None:
        raise UsageError("no AWS credentials found: preflight reads the live EC2 API "
                         "(set AWS_PROFILE or run `aws configure`); `trainyard plan` works offline")
    try:
        findings = run_checks(cfg, session)
    except botocore.exceptions.BotoCoreError as e:
        raise UsageError(f"AWS API call failed: {e}") from None
    except botocore.exceptions.ClientError as e:
        raise UsageError(f"AWS API call failed: {e}") from None
    failed = [f for f in findings if not f.ok]
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'}  {f.check:<11} {f.subject:<28} {f.detail}")
    print(f"{len(findings) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
