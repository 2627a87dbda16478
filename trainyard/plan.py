"""`trainyard plan`: synthesize a stack offline and summarise it (or write the plan JSON)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from components.k8s_names import POOL_LABEL
from trainyard.errors import UsageError
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
    stack, stack_file = stack_of(args)
    to_file = args.json is not None and str(args.json) != "-"
    if to_file and not args.json.resolve().parent.is_dir():  # fail before synthesizing
        raise UsageError(f"{args.json}: cannot write: no directory {args.json.parent}")
    started = time.perf_counter()
    plan = synthesize(stack, stack_file)
    elapsed = time.perf_counter() - started
    if args.json is not None:
        text = dump_plan(plan)
        if not to_file:
            sys.stdout.write(text)
        else:
            try:
                args.json.write_text(text)
            except OSError as e:
                raise UsageError(f"{args.json}: cannot write: {e.strerror or e}") from None
    if not args.quiet and str(args.json) != "-":
        print(summarize(plan, elapsed))
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
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EFA_INTERFACE_TYPES = ("efa", "efa-only")


def node_group_types(node_group: dict, launch_template: dict | None) -> list[str]:
    """Instance types of a node group; Capacity Block groups name theirs in the launch template."""
    types = (node_group.get("inputs") or {}).get("instanceTypes") or []
    lt_inputs = (launch_template or {}).get("inputs") or {}
    if not types and lt_inputs.get("instanceType"):
        types = [lt_inputs["instanceType"]]
    return list(types)


@dataclass(frozen=True)
class PlannedPool:
    """One node group of a plan, as `plan`, `review` and `cost` read it."""

    name: str
    """The group's logical name."""
    label: str
    """Its `trainyard.io/pool` label (the pool name), else the logical name."""
    capacity_type: str
    instance_types: tuple[str, ...]
    min_size: int
    desired_size: int
    max_size: int
    efa_per_node: int
    """EFA interfaces (efa + efa-only) in the group's launch template."""


def planned_pools(plan: dict) -> list[PlannedPool]:
    """Every node group of a plan, sorted by logical name, with its launch template's facts."""
    custom = [r for r in plan["resources"] if r.get("custom", True)]
    lts = {r["id"]: r for r in custom if r["type"] == LAUNCH_TEMPLATE}
    out = []
    for ng in sorted((r for r in custom if r["type"] == NODE_GROUP), key=lambda r: r["name"]):
        i = ng.get("inputs") or {}
        sc = i.get("scalingConfig") or {}
        lt = lts.get((i.get("launchTemplate") or {}).get("id"))
        nics = ((lt or {}).get("inputs") or {}).get("networkInterfaces") or []
        out.append(PlannedPool(
            name=ng["name"], label=(i.get("labels") or {}).get(POOL_LABEL, ng["name"]),
            capacity_type=i.get("capacityType", "ON_DEMAND"),
            instance_types=tuple(node_group_types(ng, lt)),
            min_size=int(sc.get("minSize") or 0), desired_size=int(sc.get("desiredSize") or 0),
            max_size=int(sc.get("maxSize") or 0),
            efa_per_node=sum(1 for ni in nics if ni.get("interfaceType") in EFA_INTERFACE_TYPES)))
    return out


def summarize(plan: dict, elapsed: float | None = None) -> str:
    res = plan["resources"]
    custom = [r for r in res if r["custom"]]
    comp = _component_of(plan)
    per = Counter(comp[r["urn"]] for r in custom)
    lines = [f"trainyard plan: stack {plan['stack']!r} (offline, mock runtime: ids, ARNs and "
             "endpoints are placeholders)",
             f"  {len(custom)} resources in {len([r for r in res if not r['custom']])} "
             "components" + (f", synthesized in {elapsed:.2f}s" if elapsed is not None else "")]
    lines.append("  resources per component:")
    for name, n in sorted(per.items()):
        lines.append(f"    {name:<22} {n:>4}")

    pools = planned_pools(plan)
    if pools:
        lines.append("  node pools:")
        lines.append(f"    {'pool':<18} {'capacity':<15} {'instance types':<30} "
                     f"{'min/des/max':<12} {'GPUs/node':>9} {'EFA/node':>8}")
    gpus_max = efa_max = 0
    from components.catalog import load_catalog

    catalog = load_catalog()
    for pool in pools:
        types = pool.instance_types
        gpus = catalog.get(types[0]).gpus if types and catalog.knows(types[0]) else 0
        gpus_max += gpus * pool.max_size
        efa_max += pool.efa_per_node * pool.max_size
        lines.append(f"    {pool.label:<18} {pool.capacity_type:<15} {','.join(types):<30} "
                     f"{pool.min_size}/{pool.desired_size}/{pool.max_size:<7} "
                     f"{gpus:>9} {pool.efa_per_node:>8}")
    if pools:
        lines.append(f"  at max size: {gpus_max} GPUs, {efa_max} EFA interfaces")
    if plan.get("outputs"):
        lines.append("  stack outputs: " + ", ".join(sorted(plan["outputs"])))
    return "\n".join(lines)
