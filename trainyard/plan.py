"""`trainyard plan`: synthesize a stack offline and summarise it (or write the plan JSON)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from components.services.k8s_names import GPU_RESOURCE, POOL_LABEL
from trainyard import outfile
from trainyard.synth import dump_plan, stack_name_from_file, synthesize


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="synthesize a stack offline (no AWS account, no Pulumi CLI)",
                       description="Run the Pulumi program under the mock runtime and show "
                                   "what `pulumi up` would create. Provider-computed values "
                                   "(ids, ARNs, endpoints) are placeholders.")
    add_stack_args(p)
    p.add_argument("--json", metavar="PATH", type=Path, help="write the plan JSON here ('-' = stdout)")
    p.add_argument("--quiet", action="store_true", help="no human summary")
    p.set_defaults(func=run)


def add_stack_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stack", help="stack name: stacks/Pulumi.<NAME>.yaml")
    g.add_argument("--stack-file", type=Path, metavar="PATH", help="any stack config file")


def add_plan_source_args(p: argparse.ArgumentParser) -> None:
    """--stack | --stack-file | --plan: what `check` and `cost` judge (see check.load_plan_for)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--stack", metavar="NAME", help="synthesize stacks/Pulumi.NAME.yaml")
    src.add_argument("--stack-file", metavar="PATH", type=Path, help="synthesize this stack file")
    src.add_argument("--plan", metavar="PATH", type=Path,
                     help="a plan written by `trainyard plan --json`")


def stack_of(args) -> tuple[str, Path | None]:
    if args.stack_file is not None:
        return stack_name_from_file(args.stack_file), args.stack_file
    return args.stack, None


def run(args) -> int:
    from trainyard.synth import load_config

    stack, stack_file = stack_of(args)
    outfile.check_writable(args.json)  # fail before synthesizing
    started = time.perf_counter()
    plan = synthesize(stack, stack_file)
    elapsed = time.perf_counter() - started
    if args.json is not None:
        text = dump_plan(plan)
        if str(args.json) == outfile.STDOUT:
            sys.stdout.write(text)
        else:
            outfile.write(args.json, text)
    if not args.quiet and str(args.json) != outfile.STDOUT:
        print(summarize(plan, elapsed, load_config(stack, stack_file)))
        if args.json is not None:
            print(f"plan JSON written to {args.json}")
    return 0


def _component_of(plan: dict) -> dict[str, str]:
    """URN -> the name of its top-level component under the platform (network, cluster, ...)."""
    by_urn = {r["urn"]: r for r in plan["resources"]}
    out = {}
    for r in plan["resources"]:
        chain = [r]
        while chain[-1]["parent"] in by_urn:
            chain.append(by_urn[chain[-1]["parent"]])
        comps = [c for c in reversed(chain) if not c["custom"]]
        # [Platform, Network, ...] -> the component directly under the Platform
        label = comps[1]["type"].split(":")[-1] if len(comps) > 1 else \
            (comps[0]["type"].split(":")[-1] if comps else "(root)")
        out[r["urn"]] = label
    return out


NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
EFA_INTERFACE_TYPES = ("efa", "efa-only")


# ----------------------------------------------------------------------------------------------
# Counting: one definition for `plan` and `check`
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceCount:
    """What a plan holds. `resources` are the custom resources `pulumi up` creates (explicit
    providers included, as the engine counts them); `components` are the ComponentResources
    that group them (`trainyard:index:*`): they create nothing in AWS but policies see them too.
    The stack resource itself is not in a plan."""

    resources: int
    providers: int
    components: int

    @property
    def total(self) -> int:
        """Every object in the plan: what `trainyard check` hands the policies."""
        return self.resources + self.components

    def __str__(self) -> str:
        prov = f" ({self.providers} provider{'s' if self.providers != 1 else ''})" \
            if self.providers else ""
        return f"{self.resources} resources{prov} and {self.components} components"


def count_resources(plan: dict) -> ResourceCount:
    res = [r for r in plan.get("resources", []) if r.get("type") != "pulumi:pulumi:Stack"]
    custom = [r for r in res if r.get("custom", True)]
    return ResourceCount(
        resources=len(custom),
        providers=sum(1 for r in custom if str(r.get("type", "")).startswith("pulumi:providers:")),
        components=len(res) - len(custom))


# ----------------------------------------------------------------------------------------------
# Node pools as planned
# ----------------------------------------------------------------------------------------------
def node_group_types(node_group: dict, launch_template: dict | None) -> list[str]:
    """Instance types of a node group; Capacity Block groups name theirs in the launch template."""
    types = (node_group.get("inputs") or {}).get("instanceTypes") or []
    lt_inputs = (launch_template or {}).get("inputs") or {}
    if not types and lt_inputs.get("instanceType"):
        types = [lt_inputs["instanceType"]]
    return list(types)


@dataclass(frozen=True)
class PlannedPool:
    """One node pool of a plan (an EKS managed node group or a Karpenter NodePool), as `plan`,
    `review` and `cost` read it."""

    name: str
    """The group's (or NodePool's) logical name."""
    label: str
    """Its `trainyard.io/pool` label (the pool name), else the logical name."""
    capacity_type: str
    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    efa_per_node: int
    """EFA interfaces (efa + efa-only) in the group's launch template (the NodePool's
    EC2NodeClass)."""
    availability_zones: tuple[str, ...] = ()
    """AZs of the group's subnets (`subnetIds` followed to the plan's subnets), sorted; a
    NodePool's zone requirement, else its EC2NodeClass's subnets."""
    provisioner: str = "managed"
    """`managed` (EKS managed node group) or `karpenter` (a NodePool: min and desired 0, max from
    its limits)."""


def max_nodes_from_limits(limits: dict, gpus_per_node: int, vcpus_per_node: int) -> int:
    """The most nodes a NodePool's `limits` allow (components/karpenter.limits' inverse): the
    tightest of accelerators and CPU; 0 without a limit this can read."""
    bounds = []
    for key, per in [*((r, gpus_per_node) for r in sorted(set(GPU_RESOURCE.values()))),
                     ("cpu", vcpus_per_node)]:
        if key in limits and per:
            try:
                bounds.append(int(float(str(limits[key]))) // per)
            except ValueError:
                continue  # a quantity like "10k": not ours; the other limit still bounds it
    return min(bounds) if bounds else 0


def karpenter_pool(np: dict, classes: dict, subnet_az: dict) -> PlannedPool:
    """A NodePool (and the EC2NodeClass it names, from `classes` by name) as a PlannedPool."""
    from components.compute.catalog import load_catalog

    spec = (np.get("inputs") or {}).get("spec") or {}
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    reqs = {r.get("key"): list(r.get("values") or []) for r in
            (template.get("spec") or {}).get("requirements") or [] if r.get("operator") == "In"}
    types = tuple(reqs.get("node.kubernetes.io/instance-type") or ())
    markets = {"spot": "SPOT", "on-demand": "ON_DEMAND", "reserved": "RESERVED"}
    capacity = labels.get("trainyard.io/capacity-type") or "/".join(
        markets.get(v, v) for v in reqs.get("karpenter.sh/capacity-type") or ["on-demand"])
    ref = ((template.get("spec") or {}).get("nodeClassRef") or {}).get("name")
    nc = ((classes.get(ref) or {}).get("inputs") or {}).get("spec") or {}
    nics = nc.get("networkInterfaces") or []
    azs = reqs.get("topology.kubernetes.io/zone") or sorted(
        {subnet_az[t["id"]] for t in nc.get("subnetSelectorTerms") or []
         if t.get("id") and subnet_az.get(t["id"])})
    catalog = load_catalog()
    known = [catalog.get(t) for t in types if catalog.knows(t)]
    max_size = max_nodes_from_limits(spec.get("limits") or {},
                                     max((s.gpus for s in known), default=0),
                                     max((s.vcpus for s in known), default=0))
    return PlannedPool(
        name=np["name"], label=labels.get(POOL_LABEL, np["name"]), capacity_type=capacity,
        instance_types=types, min_size=0, desired_size=0, max_size=max_size,
        efa_per_node=sum(1 for ni in nics if ni.get("interfaceType") in EFA_INTERFACE_TYPES),
        availability_zones=tuple(sorted(azs)), provisioner="karpenter")


def planned_pools(plan: dict) -> list[PlannedPool]:
    """Every node pool of a plan (managed node groups with their launch template's facts,
    Karpenter NodePools with their EC2NodeClass's), sorted by logical name."""
    custom = [r for r in plan["resources"] if r.get("custom", True)]
    lts = {r["id"]: r for r in custom if r["type"] == LAUNCH_TEMPLATE}
    subnet_az = {r["id"]: (r.get("inputs") or {}).get("availabilityZone")
                 for r in custom if r["type"] == SUBNET}
    classes = {((r.get("inputs") or {}).get("metadata") or {}).get("name"): r
               for r in custom if r["type"] == NODE_CLASS}
    out = [karpenter_pool(r, classes, subnet_az) for r in custom if r["type"] == NODE_POOL]
    for ng in sorted((r for r in custom if r["type"] == NODE_GROUP), key=lambda r: r["name"]):
        i = ng.get("inputs") or {}
        sc = i.get("scalingConfig") or {}
        lt = lts.get((i.get("launchTemplate") or {}).get("id"))
        nics = ((lt or {}).get("inputs") or {}).get("networkInterfaces") or []
        azs = sorted({subnet_az[s] for s in i.get("subnetIds") or [] if subnet_az.get(s)})
        out.append(PlannedPool(
            name=ng["name"], label=(i.get("labels") or {}).get(POOL_LABEL, ng["name"]),
            capacity_type=i.get("capacityType", "ON_DEMAND"),
            instance_types=tuple(node_group_types(ng, lt)),
            min_size=int(sc.get("minSize") or 0), desired_size=int(sc.get("desiredSize") or 0),
            max_size=int(sc.get("maxSize") or 0),
            efa_per_node=sum(1 for ni in nics if ni.get("interfaceType") in EFA_INTERFACE_TYPES),
            availability_zones=tuple(azs)))
    return sorted(out, key=lambda p: p.name)


# ----------------------------------------------------------------------------------------------
# Subnets: the IP budget components/network/netmath.py checks, shown
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubnetRow:
    role: str
    """`private` (nodes and pods) or `public` (NAT gateways and load balancers)."""
    az: str
    cidr: str
    usable: int
    """Addresses left after AWS's 5 per subnet."""
    needed_at_max: Optional[int]
    """Private subnets: addresses every pool that may use the AZ needs at max size, plus the
    system nodes, endpoints and service ENIs (netmath.ips_needed_in_az). None for public."""


def subnet_rows(config) -> list[SubnetRow]:
    """The stack's subnets (netmath.carve_subnets) with their IP budget."""
    from components.compute.catalog import load_catalog
    from components.network import netmath

    n = config.network
    carved = netmath.carve_subnets(n.vpc_cidr, n.availability_zones, n.private_subnet_prefix,
                                   n.public_subnet_prefix)
    catalog = load_catalog()
    rows = [SubnetRow("private", az, cidr, netmath.usable_addresses(cidr),
                      netmath.ips_needed_in_az(az, config.gpu_pools, config.cluster.system_nodes,
                                               n, catalog))
            for az, cidr in carved.private.items()]
    rows += [SubnetRow("public", az, cidr, netmath.usable_addresses(cidr), None)
             for az, cidr in carved.public.items()]
    return rows


# ----------------------------------------------------------------------------------------------
# Human summary
# ----------------------------------------------------------------------------------------------
def summarize(plan: dict, elapsed: float | None = None, config=None) -> str:
    """The human summary; `config` (the stack's StackConfig) adds the subnet table."""
    res = plan["resources"]
    custom = [r for r in res if r["custom"]]
    comp = _component_of(plan)
    per = Counter(comp[r["urn"]] for r in custom)
    lines = [f"trainyard plan: stack {plan['stack']!r} (offline, mock runtime: ids, ARNs and "
             "endpoints are placeholders)",
             f"  {count_resources(plan)}"
             + (f", synthesized in {elapsed:.2f}s" if elapsed is not None else "")]
    lines.append("  resources per component:")
    for name, n in sorted(per.items()):
        lines.append(f"    {name:<22} {n:>4}")

    pools = planned_pools(plan)
    from components.compute.catalog import load_catalog

    catalog = load_catalog()
    if pools:
        rows = [("pool", "provisioner", "capacity", "AZ", "instance types", "min/des/max",
                 "GPUs/node", "EFA/node")]
        gpus_max = efa_max = 0
        for pool in pools:
            types = pool.instance_types
            gpus = catalog.get(types[0]).gpus if types and catalog.knows(types[0]) else 0
            gpus_max += gpus * pool.max_size
            efa_max += pool.efa_per_node * pool.max_size
            rows.append((pool.label, pool.provisioner, pool.capacity_type,
                         ",".join(pool.availability_zones) or "?", ",".join(types),
                         f"{pool.min_size}/{pool.desired_size}/{pool.max_size}", str(gpus),
                         str(pool.efa_per_node)))
        lines.append("  node pools:")
        lines += text_table(rows, right=(6, 7))
        lines.append(f"  at max size: {gpus_max} GPUs, {efa_max} EFA interfaces (Karpenter "
                     "pools: min/desired 0, max from the NodePool's limits)")

    if config is not None:
        rows = [("subnet", "AZ", "CIDR", "usable IPs", "IPs needed at max")]
        short = []
        for row in subnet_rows(config):
            need = "-" if row.needed_at_max is None else f"{row.needed_at_max:,}"
            rows.append((row.role, row.az, row.cidr, f"{row.usable:,}", need))
            if row.needed_at_max is not None and row.needed_at_max > row.usable:
                short.append(row)
        lines.append("  subnets (IPs needed: every pool that may use the AZ at max size, system "
                     "nodes, endpoints, service ENIs):")
        lines += text_table(rows, right=(3, 4))
        for row in short:
            lines.append(f"  WARNING: {row.az} needs {row.needed_at_max:,} addresses but its "
                         f"private subnet has {row.usable:,}")
    if plan.get("outputs"):
        lines.append("  stack outputs: " + ", ".join(sorted(plan["outputs"])))
    return "\n".join(lines)


def text_table(rows: list[tuple[str, ...]], right: tuple[int, ...] = (),
               indent: str = "    ") -> list[str]:
    """Left-aligned columns (right-aligned at the indexes in `right`), two spaces apart; the
    plain-text tables of `plan` and `cost`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                                for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]
