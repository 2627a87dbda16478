"""`trainyard plan`: synthesize a stack offline and summarise it (or write the plan JSON)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

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


def node_group_types(node_group: dict, launch_template: dict | None) -> list[str]:
    """Instance types of a node group; Capacity Block groups name theirs in the launch template."""
    types = node_group["inputs"].get("instanceTypes") or []
    if not types and launch_template and launch_template["inputs"].get("instanceType"):
        types = [launch_template["inputs"]["instanceType"]]
    return list(types)


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

    pools = [r for r in custom if r["type"] == "aws:eks/nodeGroup:NodeGroup"]
    lts = {r["id"]: r for r in custom if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"}
    if pools:
        lines.append("  node pools:")
        lines.append(f"    {'pool':<18} {'capacity':<15} {'instance types':<30} "
                     f"{'min/des/max':<12} {'GPUs/node':>9} {'EFA/node':>8}")
    gpus_max = efa_max = 0
    from components.catalog import load_catalog

    catalog = load_catalog()
    for ng in sorted(pools, key=lambda r: r["name"]):
        i = ng["inputs"]
        sc = i.get("scalingConfig", {})
        lt = lts.get((i.get("launchTemplate") or {}).get("id"))
        types = node_group_types(ng, lt)
        spec = catalog.get(types[0]) if types and catalog.knows(types[0]) else None
        efa = sum(1 for ni in (lt or {}).get("inputs", {}).get("networkInterfaces", [])
                  if ni.get("interfaceType") in ("efa", "efa-only"))
        gpus = spec.gpus if spec else 0
        gpus_max += gpus * sc.get("maxSize", 0)
        efa_max += efa * sc.get("maxSize", 0)
        label = (i.get("labels") or {}).get("trainyard.io/pool", ng["name"])
        lines.append(f"    {label:<18} {i.get('capacityType', 'ON_DEMAND'):<15} "
                     f"{','.join(types):<30} "
                     f"{sc.get('minSize')}/{sc.get('desiredSize')}/{sc.get('maxSize'):<7} "
                     f"{gpus:>9} {efa:>8}")
    if pools:
        lines.append(f"  at max size: {gpus_max} GPUs, {efa_max} EFA interfaces")
    if plan.get("outputs"):
        lines.append("  stack outputs: " + ", ".join(sorted(plan["outputs"])))
    return "\n".join(lines)
