"""`trainyard check`: run the CrossGuard pack in policies/ over a plan, offline.

    trainyard check --stack prod [--json out.json] [--policy-config policies/config/prod.json]
    trainyard check --stack-file path/Pulumi.x.yaml
    trainyard check --plan plan.json          # the JSON `trainyard plan --json` writes

The policies are the very objects `pulumi preview --policy-pack policies` serves; this module plays
the engine's part: it applies each policy's config-schema defaults and the per-environment config
(policies/config/<env>.json, the file `--policy-pack-config` takes), hands resource policies the
inputs and stack policies the outputs of every resource, and wraps properties so values unknown at
preview raise `UnknownValueError`.

Results: violations grouped by policy; "cannot judge" for a policy that met an unknown value
(reported, never a pass); "errors" for a policy that raised (the others still run).
Exit codes: 0 no mandatory violation and no policy error; 1 a mandatory violation or a policy
error (a policy that crashed cannot vouch for the stack); 2 bad input (plan file, stack, policy
config).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from trainyard import outfile
from trainyard.errors import UsageError
from trainyard.plan import ResourceCount, add_plan_source_args, count_resources
from trainyard.project import project_root

CONFIG_SUBDIR = Path("policies") / "config"
"""Per-environment policy config under the project root, `<env>.json` (the
`--policy-pack-config` format)."""


def config_dir() -> Path:
    return project_root() / CONFIG_SUBDIR


def __getattr__(name: str) -> Any:
    # ROOT / CONFIG_DIR follow the project found from the working directory (trainyard/project.py)
    if name == "ROOT":
        return project_root()
    if name == "CONFIG_DIR":
        return config_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ENVIRONMENTS = ("dev", "staging", "prod")
LEVELS = ("advisory", "mandatory", "remediate", "disabled")


# ----------------------------------------------------------------------------------------------
# Plan files
# ----------------------------------------------------------------------------------------------
def read_plan(path: Path) -> dict:
    """Read and shape-check a plan file. UsageError (exit 2) with the exact problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read plan file: {e}") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: malformed plan JSON at line {e.lineno}, column {e.colno}: "
                         f"{e.msg}") from None
    validate_plan(plan, str(path))
    return plan


def validate_plan(plan: Any, where: str = "plan") -> None:
    if not isinstance(plan, dict):
        raise UsageError(f"{where}: a plan is a JSON object with `resources`, got "
                         f"{type(plan).__name__}")
    resources = plan.get("resources")
    if not isinstance(resources, list):
        raise UsageError(f"{where}: `resources` must be a list (is this a `trainyard plan "
                         "--json` file?)")
    for i, r in enumerate(resources):
        if not isinstance(r, dict):
            raise UsageError(f"{where}: resources[{i}] must be an object")
        for key in ("urn", "type"):
            if not isinstance(r.get(key), str) or not r.get(key):
                raise UsageError(f"{where}: resources[{i}].{key} must be a non-empty string")
        for key in ("inputs", "outputs"):
            if r.get(key) is not None and not isinstance(r.get(key), dict):
                raise UsageError(f"{where}: resources[{i}].{key} must be an object")
    if plan.get("stack") is not None and not isinstance(plan.get("stack"), str):
        raise UsageError(f"{where}: `stack` must be a string")


# ----------------------------------------------------------------------------------------------
# Policy config: the `--policy-pack-config` format, validated like the engine does
# ----------------------------------------------------------------------------------------------
_JSON_TYPES = {"string": "a string", "number": "a number", "integer": "an integer",
               "boolean": "a boolean", "array": "a list", "object": "an object"}


def _type_ok(value: Any, typ: str) -> bool:
    if typ == "string":
        return isinstance(value, str)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
    if typ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ == "array":
        return isinstance(value, list)
    if typ == "object":
        return isinstance(value, dict)
    return True


def check_schema(value: Any, spec: Mapping, path: str) -> list[str]:
    """The subset of JSON Schema the pack's config schemas use."""
    problems = []
    typ = spec.get("type")
    if typ and not _type_ok(value, typ):
        return [f"{path}: expected {_JSON_TYPES.get(typ, typ)}, got {json.dumps(value)}"]
    if "enum" in spec and value not in spec["enum"]:
        problems.append(f"{path}: {json.dumps(value)} is not one of "
                        f"{', '.join(json.dumps(v) for v in spec['enum'])}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            problems.append(f"{path}: {value} is below the minimum {spec['minimum']}")
        if "maximum" in spec and value > spec["maximum"]:
            problems.append(f"{path}: {value} is above the maximum {spec['maximum']}")
    if isinstance(value, list) and isinstance(spec.get("items"), dict):
        for i, v in enumerate(value):
            problems += check_schema(v, spec["items"], f"{path}[{i}]")
    if isinstance(value, dict) and isinstance(spec.get("additionalProperties"), dict):
        for k, v in value.items():
            problems += check_schema(v, spec["additionalProperties"], f"{path}.{k}")
    return problems


@dataclass
class PolicyConfig:
    """Per-policy enforcement levels and properties (defaults not yet applied)."""

    source: Optional[str] = None
    levels: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)


def parse_policy_config(raw: Any, policies: list, source: str) -> PolicyConfig:
    """Validate a `--policy-pack-config` document against the pack. UsageError on any problem,
    naming the policy and key."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: policy config must be a JSON object of policy names")
    by_name = {p.name: p for p in policies}
    cfg = PolicyConfig(source=source)
    problems = []
    for name, value in raw.items():
        if name == "all":
            if value not in LEVELS:
                problems.append(f"{source}: all: expected an enforcement level "
                                f"({', '.join(LEVELS)}), got {json.dumps(value)}")
            else:
                for p in policies:
                    cfg.levels.setdefault(p.name, value)
            continue
        policy = by_name.get(name)
        if policy is None:
            problems.append(f"{source}: {name}: no such policy in the pack")
            continue
        if isinstance(value, str):
            value = {"enforcementLevel": value}
        if not isinstance(value, dict):
            problems.append(f"{source}: {name}: expected an enforcement level or an object, got "
                            f"{json.dumps(value)}")
            continue
        props = dict(getattr(policy, "config_properties", {}) or {})
        for key, v in value.items():
            if key == "enforcementLevel":
                if v not in LEVELS:
                    problems.append(f"{source}: {name}.enforcementLevel: expected one of "
                                    f"{', '.join(LEVELS)}, got {json.dumps(v)}")
                else:
                    cfg.levels[name] = v
                continue
            if key not in props:
                known = ", ".join(sorted(props)) or "none"
                problems.append(f"{source}: {name}.{key}: unknown config key (known: {known})")
                continue
            problems += check_schema(v, props[key], f"{source}: {name}.{key}")
            cfg.properties.setdefault(name, {})[key] = v
        required = policy.config_schema.required if policy.config_schema else None
        for key in required or []:
            if key not in value and "default" not in props.get(key, {}):
                problems.append(f"{source}: {name}.{key}: required")
    if problems:
        raise UsageError("invalid policy config:\n  " + "\n  ".join(problems))
    return cfg


def load_policy_config(path: Path, policies: list) -> PolicyConfig:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such policy config file") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: "
                         f"{e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    return parse_policy_config(raw, policies, _display(path))


def effective_config(policy, cfg: PolicyConfig) -> dict:
    """Schema defaults overlaid with the configured values: what the engine hands a policy."""
    out = {k: v["default"] for k, v in (getattr(policy, "config_properties", {}) or {}).items()
           if "default" in v}
    out.update(cfg.properties.get(policy.name, {}))
    return out


def level_of(policy, cfg: PolicyConfig) -> str:
    if policy.name in cfg.levels:
        return cfg.levels[policy.name]
    return policy.enforcement_level.value if policy.enforcement_level else "advisory"


def environment_of(plan: dict) -> Optional[str]:
    """The plan's environment: the stack name if it is one, else its resources' environment tag."""
    stack = plan.get("stack")
    if stack in ENVIRONMENTS:
        return stack
    seen = Counter()
    for r in plan.get("resources", []):
        tags = (r.get("inputs") or {}).get("tags")
        if isinstance(tags, dict) and isinstance(tags.get("environment"), str):
            seen[tags["environment"]] += 1
    if seen:
        env = seen.most_common(1)[0][0]
        return env if env in ENVIRONMENTS else None
    return None


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------------
# Running the policies (the engine's side of the protocol)
# ----------------------------------------------------------------------------------------------
@dataclass
class Report:
    stack: Optional[str]
    environment: Optional[str]
    policy_config: Optional[str]
    resources: int
    """Objects handed to the policies: resources and component resources."""
    policies_run: int = 0
    violations: list = field(default_factory=list)
    cannot_judge: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    descriptions: dict = field(default_factory=dict)
    counts: Optional[ResourceCount] = None
    """The plan's resources and components, counted as `trainyard plan` counts them."""

    @property
    def mandatory(self) -> list:
        return [v for v in self.violations if v["level"] == "mandatory"]

    @property
    def exit_code(self) -> int:
        return 1 if self.mandatory or self.errors else 0

    def to_json(self) -> dict:
        return {
            "policies_run": self.policies_run,
            "violations": self.violations,
            "cannot_judge": self.cannot_judge,
            "errors": self.errors,
            "stack": self.stack,
            "environment": self.environment,
            "policy_config": self.policy_config,
            "resources_checked": self.resources,
            "resources": self.counts.resources if self.counts else None,
            "components": self.counts.components if self.counts else None,
            "summary": {
                "mandatory": len(self.mandatory),
                "advisory": len(self.violations) - len(self.mandatory),
                "cannot_judge": len(self.cannot_judge),
                "errors": len(self.errors),
            },
        }


def _finish(result) -> None:
    if result is not None and inspect.isawaitable(result):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(result)
        finally:
            loop.close()


def overlay(outputs: Mapping, inputs: Mapping) -> dict:
    """A resource's state as the engine shows it to stack policies: outputs, with the inputs laid
    over them key by key, recursively, so an output-only nested value (an EKS cluster's
    `vpcConfig.clusterSecurityGroupId`) survives an input object of the same name."""
    out = dict(outputs)
    for key, value in inputs.items():
        old = outputs.get(key)
        out[key] = overlay(old, value) if isinstance(value, Mapping) and \
            isinstance(old, Mapping) else value
    return out


def _policy_objects(plan: dict):
    """ResourceValidationArgs-ready tuples and the PolicyResource list, built once per run."""
    from pulumi_policy import (
        PolicyCustomTimeouts,
        PolicyProviderResource,
        PolicyResource,
        PolicyResourceOptions,
    )
    from pulumi_policy.proxy import unknown_checking_proxy

    resources = [r for r in plan["resources"] if r.get("type") != "pulumi:pulumi:Stack"]
    providers = {}
    for r in resources:
        if r["type"].startswith("pulumi:providers:"):
            providers[(r["type"], r.get("name"))] = r

    def opts(r):
        return PolicyResourceOptions(
            protect=bool(r.get("protect", False)), ignore_changes=[],
            delete_before_replace=None, aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
            parent=r.get("parent"))

    def provider(r):
        if r["type"].startswith("pulumi:providers:"):
            return None
        package = r["type"].split(":", 1)[0]
        p = providers.get((f"pulumi:providers:{package}", r.get("provider")))
        if p is None:
            return None
        return PolicyProviderResource(p["type"], unknown_checking_proxy(dict(p.get("inputs") or {})),
                                      p["urn"], p.get("name") or "")

    analyzed = []   # (resource dict, props proxy, opts, provider)
    stack_resources = []
    by_urn = {}
    for r in resources:
        inputs = dict(r.get("inputs") or {})
        state = overlay(r.get("outputs") or {}, inputs)
        if r.get("id") and "id" not in state:
            state["id"] = r["id"]
        o, prov = opts(r), provider(r)
        analyzed.append((r, unknown_checking_proxy(inputs), o, prov))
        pr = PolicyResource(r["type"], unknown_checking_proxy(state), r["urn"],
                            r.get("name") or r["urn"].rsplit("::", 1)[-1], o, prov, None, [], {})
        stack_resources.append(pr)
        by_urn[r["urn"]] = pr
    for r, pr in zip(resources, stack_resources, strict=True):
        parent = r.get("parent")
        if parent in by_urn:
            pr.parent = by_urn[parent]
        pr.dependencies = [by_urn[d] for d in (r.get("dependencies") or []) if d in by_urn]
    return analyzed, stack_resources


def run_checks(plan: dict, config: Optional[PolicyConfig] = None, policies: Optional[list] = None,
               environment: Optional[str] = None) -> Report:
    """Run every enabled policy over `plan` and collect violations, unknowns and errors."""
    from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs
    from pulumi_policy.policy import _NotApplicableError
    from pulumi_policy.proxy import UnknownValueError

    if policies is None:
        from policies import POLICIES as policies  # noqa: N811
    config = config or PolicyConfig()
    validate_plan(plan)
    analyzed, stack_resources = _policy_objects(plan)
    report = Report(stack=plan.get("stack"), environment=environment,
                    policy_config=config.source, resources=len(analyzed),
                    counts=count_resources(plan))

    for policy in policies:
        level = level_of(policy, config)
        if level == "disabled":
            continue
        if level == "remediate":  # the engine downgrades an unremediated violation to mandatory
            level = "mandatory"
        report.policies_run += 1
        report.descriptions[policy.name] = policy.description
        cfg = effective_config(policy, config)

        def record(message, urn, _policy=policy, _level=level):
            report.violations.append({"policy": _policy.name, "level": _level,
                                      "urn": urn or "", "message": message or _policy.description})

        if isinstance(policy, ResourceValidationPolicy):
            types = getattr(policy, "resource_types", None)
            for r, props, o, prov in analyzed:
                if types and r["type"] not in types:
                    continue
                args = ResourceValidationArgs(r["type"], props, r["urn"], r.get("name") or "",
                                              o, prov, dict(cfg))
                _run_one(report, policy, args, lambda m, u=None, _r=r: record(m, _r["urn"]),
                         r["urn"], UnknownValueError, _NotApplicableError)
        else:
            args = StackValidationArgs(stack_resources, dict(cfg))
            _run_one(report, policy, args, lambda m, u=None: record(m, u), "",
                     UnknownValueError, _NotApplicableError)
    return report


def _run_one(report: Report, policy, args, report_violation, urn: str, unknown_error,
             not_applicable) -> None:
    try:
        _finish(policy.validate(args, report_violation))
    except unknown_error as e:
        report.cannot_judge.append({"policy": policy.name, "urn": urn,
                                    "message": f"cannot judge: {e.message}"})
    except not_applicable:
        pass
    except Exception as e:  # noqa: BLE001 - a broken policy must not stop the others
        report.errors.append({"policy": policy.name, "urn": urn,
                              "message": f"{type(e).__name__}: {e}"})


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def render(report: Report) -> str:
    lines = []
    env = report.environment or "unknown environment"
    cfg = report.policy_config or "schema defaults only"
    lines.append(f"trainyard check: stack {report.stack or '?'} ({env}; policy config: {cfg})")
    judged = report.counts or f"{report.resources} resources"
    lines.append(f"{report.policies_run} policies over {judged}: "
                 f"{len(report.mandatory)} mandatory, "
                 f"{len(report.violations) - len(report.mandatory)} advisory violation(s); "
                 f"{len(report.cannot_judge)} cannot judge; {len(report.errors)} policy error(s)")
    grouped: dict = {}
    for v in report.violations:
        grouped.setdefault((v["level"] != "mandatory", v["policy"], v["level"]), []).append(v)
    for (_, name, level), vs in sorted(grouped.items()):
        lines.append("")
        lines.append(f"[{level}] {name}: {report.descriptions.get(name, '')}")
        for v in vs:
            lines.append(f"  - {v['urn'] or '(stack)'}")
            lines.append(f"    {v['message']}")
    if report.cannot_judge:
        lines.append("")
        lines.append("cannot judge (values unknown until the resources exist; not a pass):")
        for c in report.cannot_judge:
            lines.append(f"  - {c['policy']}: {c['urn'] or '(stack)'}: {c['message']}")
    if report.errors:
        lines.append("")
        lines.append("policy errors (the policy raised; the others still ran):")
        for e in report.errors:
            lines.append(f"  - {e['policy']}: {e['urn'] or '(stack)'}: {e['message']}")
    if not report.violations and not report.cannot_judge and not report.errors:
        lines.append("no violations")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="run the policy pack over a stack or plan, offline",
        description="Run every policy in policies/ (the CrossGuard pack) over a plan. Exit 1 on "
                    "a mandatory violation or a policy error, 2 on bad input.")
    add_plan_source_args(p)
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--policy-config", metavar="PATH", type=Path,
                   help="policy config (the --policy-pack-config format); default: "
                        "policies/config/<environment>.json")
    p.set_defaults(func=run)


def load_plan_for(args) -> dict:
    if getattr(args, "plan", None) is not None:
        return read_plan(args.plan)
    from trainyard import synth

    if getattr(args, "stack_file", None) is not None:
        return synth.synthesize(synth.stack_name_from_file(args.stack_file), args.stack_file)
    return synth.synthesize(args.stack)


def config_for(plan: dict, explicit: Optional[Path], policies: list) -> tuple[PolicyConfig, Optional[str]]:
    env = environment_of(plan)
    if explicit is not None:
        return load_policy_config(explicit, policies), env
    if env and (config_dir() / f"{env}.json").is_file():
        return load_policy_config(config_dir() / f"{env}.json", policies), env
    return PolicyConfig(), env


def run(args) -> int:
    from policies import POLICIES

    outfile.check_writable(args.json)  # before synthesizing
    plan = load_plan_for(args)
    config, env = config_for(plan, getattr(args, "policy_config", None), POLICIES)
    report = run_checks(plan, config, POLICIES, env)
    sys.stdout.write(render(report))
    if args.json is not None:
        outfile.write(args.json, json.dumps(report.to_json(), indent=2) + "\n")
    return report.exit_code
