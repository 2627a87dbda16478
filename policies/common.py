"""Shared building blocks for the trainyard CrossGuard pack.

Every rule is declared with `resource_rule` or `stack_rule`, which build the pulumi-policy
objects (the same objects `policies/__main__.py` serves to the engine and `trainyard check` runs
offline) and attach the metadata every rule must carry: family, enforcement level, Checkov /
Trivy / CIS references, a config schema with defaults, and remediation text.

Rules read resources exactly as the engine hands them over: camelCase properties, numbers as
floats, and values unknown at preview raising `UnknownValueError` on access. Helpers here never
swallow that error; the engine (and `trainyard check`) report it as "cannot judge".

Nothing in policies/ imports components/: the pack judges what the engine sees.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ResourceValidationPolicy,
    Severity,
    StackValidationPolicy,
)

try:  # the proxy's error is the one the engine raises for values unknown at preview
    from pulumi_policy.proxy import UnknownValueError
except ImportError:  # pragma: no cover - layout of older SDKs
    from pulumi_policy.policy import UnknownValueError  # type: ignore

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

FAMILIES = {
    "network": "Network: VPC, subnets, security groups, flow logs",
    "efa-compute": "EFA and compute: launch templates, GPU node groups, placement, spot",
    "cluster": "EKS cluster: endpoint, logging, encryption, add-ons, access",
    "storage": "Storage and logs: S3 (v7 split resources), EFS, FSx, CloudWatch log groups",
    "iam": "Identity and IAM: roles, policies, KMS keys, trust",
    "kubernetes": "Kubernetes objects: namespaces, RBAC, network policies, quotas, pods",
    "tagging-cost": "Tagging and cost: required tags, GPU budget, NAT and endpoint cost",
    "supply-chain": "Supply chain: Helm chart pinning, known-bad versions, repositories, images",
    "readiness": "Deploy readiness: will the platform run once applied (scheduling, node "
                 "bootstrap, reachability, scale-from-zero, version lifecycle)",
}


# ----------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refs:
    """Peer references a rule mirrors (Checkov IDs, Trivy/AVD IDs, CIS EKS Benchmark v1.4)."""

    checkov: tuple[str, ...] = ()
    trivy: tuple[str, ...] = ()
    cis: tuple[str, ...] = ()
    other: tuple[str, ...] = ()

    def tags(self) -> list[str]:
        return ([f"checkov:{i}" for i in self.checkov] + [f"trivy:{i}" for i in self.trivy]
                + [f"cis-eks-1.4:{i}" for i in self.cis] + [f"ref:{i}" for i in self.other])

    def framework(self) -> PolicyComplianceFramework:
        if self.cis:
            return PolicyComplianceFramework(name="CIS Amazon EKS Benchmark", version="1.4",
                                             reference=", ".join(self.cis))
        if self.checkov:
            return PolicyComplianceFramework(name="Checkov", reference=", ".join(self.checkov))
        if self.trivy:
            return PolicyComplianceFramework(name="Trivy", reference=", ".join(self.trivy))
        return PolicyComplianceFramework(name="trainyard GPU platform",
                                         reference=", ".join(self.other) or None)


def schema(**props: dict) -> dict:
    """Config schema properties; every property must carry a `default` so the pack works with no
    config at all (the engine and `trainyard check` fill defaults from here)."""
    for key, spec in props.items():
        if "default" not in spec or "type" not in spec or "description" not in spec:
            raise TypeError(f"config property {key!r} needs type, default and description")
    return props


def defaults(config_schema: Optional[Mapping[str, dict]]) -> dict:
    return {k: v["default"] for k, v in (config_schema or {}).items()}


def _config(config_schema: Optional[Mapping[str, dict]], given: Optional[Mapping[str, Any]]) -> dict:
    cfg = defaults(config_schema)
    cfg.update({k: v for k, v in (given or {}).items() if k != "enforcementLevel"})
    return cfg


def _meta(policy, family: str, refs: Refs, config_schema, gpu: bool) -> None:
    policy.family = family
    policy.refs = refs
    policy.config_properties = dict(config_schema or {})
    policy.gpu_domain = gpu


def resource_rule(*, name: str, description: str, family: str, types: Iterable[str],
                  level: EnforcementLevel, refs: Refs, remediation: str,
                  severity: Severity = Severity.MEDIUM, config: Optional[dict] = None,
                  gpu: bool = False):
    """Declare a resource policy. The decorated function is `check(res, cfg, report)` where `res`
    is the engine's ResourceValidationArgs, `cfg` the policy config with defaults applied and
    `report(message)` records one violation."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    type_set = frozenset(types)

    def decorate(check: Callable[[Any, dict, Callable[[str], None]], None]) -> ResourceValidationPolicy:
        def validate(args, report_violation):
            if type_set and args.resource_type not in type_set:
                return
            check(args, _config(config, args.get_config()),
                  lambda msg: report_violation(msg, args.urn))

        policy = ResourceValidationPolicy(
            name=name, description=description, validate=validate, enforcement_level=level,
            config_schema=PolicyConfigSchema(properties=config) if config else None,
            severity=severity, framework=refs.framework(),
            tags=[f"family:{family}"] + (["gpu-platform"] if gpu else []) + refs.tags(),
            remediation_steps=remediation)
        policy.resource_types = type_set
        _meta(policy, family, refs, config, gpu)
        return policy

    return decorate


def stack_rule(*, name: str, description: str, family: str, level: EnforcementLevel,
               refs: Refs, remediation: str, severity: Severity = Severity.MEDIUM,
               config: Optional[dict] = None, gpu: bool = False):
    """Declare a stack policy: `check(stack, cfg, report)` with `stack` a `Stack` view and
    `report(message, urn)` attributing each violation to a resource."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")

    def decorate(check: Callable[[Stack, dict, Callable[[str, Optional[str]], None]], None]):
        def validate(args, report_violation):
            check(Stack(args.resources), _config(config, args.get_config()), report_violation)

        policy = StackValidationPolicy(
            name=name, description=description, validate=validate, enforcement_level=level,
            config_schema=PolicyConfigSchema(properties=config) if config else None,
            severity=severity, framework=refs.framework(),
            tags=[f"family:{family}"] + (["gpu-platform"] if gpu else []) + refs.tags(),
            remediation_steps=remediation)
        policy.resource_types = frozenset()
        _meta(policy, family, refs, config, gpu)
        return policy

    return decorate


# ----------------------------------------------------------------------------------------------
# Reading props (unknown values propagate as UnknownValueError)
# ----------------------------------------------------------------------------------------------
def get(obj: Any, path: str, default: Any = None) -> Any:
    """`get(props, "metadataOptions.httpTokens")`; integer segments index lists."""
    cur = obj
    for part in path.split("."):
        if cur is None:
            return default
        if isinstance(cur, Mapping):
            if part not in cur:
                return default
            cur = cur[part]
        elif isinstance(cur, Sequence) and not isinstance(cur, str) and part.isdigit():
            idx = int(part)
            if idx >= len(cur):
                return default
            cur = cur[idx]
        else:
            return default
    return default if cur is None else cur


def plain(value: Any) -> Any:
    """Deep copy out of the engine's proxies into dicts and lists (raises on any unknown)."""
    if isinstance(value, Mapping):
        return {k: plain(value[k]) for k in value}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(value[i]) for i in range(len(value))]
    return value


def items(value: Any) -> list:
    """A list property as a Python list (None -> [])."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [value[i] for i in range(len(value))]
    return [value]


def truthy(value: Any) -> bool:
    """Booleans arrive as bools or, in some provider schemas (launch templates), as strings."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def falsy_explicit(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def as_int(value: Any, default: Optional[int] = None) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def tags_of(props: Mapping) -> dict:
    tags = get(props, "tags") or {}
    return {k: tags[k] for k in tags} if isinstance(tags, Mapping) else {}


def is_open_cidr(cidr: Any) -> bool:
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def cidr_within(cidr: str, allowed: Iterable[str]) -> bool:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    for a in allowed:
        try:
            outer = ipaddress.ip_network(a, strict=False)
        except ValueError:
            continue
        if net.version == outer.version and net.subnet_of(outer):  # type: ignore[arg-type]
            return True
    return False


def ports_cover(from_port: Any, to_port: Any, protocol: Any, port: int) -> bool:
    proto = str(protocol).lower() if protocol is not None else "-1"
    if proto in ("-1", "all"):
        return True
    if proto not in ("tcp", "6", "udp", "17"):
        return False
    lo, hi = as_int(from_port), as_int(to_port)
    if lo is None and hi is None:
        return True
    lo = 0 if lo is None else lo
    hi = 65535 if hi is None else hi
    if lo == -1 and hi == -1:
        return True
    return lo <= port <= hi


def all_ports(from_port: Any, to_port: Any, protocol: Any) -> bool:
    proto = str(protocol).lower() if protocol is not None else "-1"
    if proto in ("-1", "all"):
        return True
    lo, hi = as_int(from_port), as_int(to_port)
    return (lo in (None, 0, -1)) and (hi in (None, 65535, -1))


def short(urn: str) -> str:
    """The logical name at the end of a URN, for messages."""
    return urn.rsplit("::", 1)[-1] if urn else urn


# ----------------------------------------------------------------------------------------------
# Stack view: joining sibling resources
# ----------------------------------------------------------------------------------------------
def peek(res, key: str) -> Any:
    """A scalar property (dotted paths allowed) or None when absent or unknown."""
    try:
        value = get(res.props, key)
    except UnknownValueError:
        return None
    return value if isinstance(value, (str, int, float)) else None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k in value for s in _strings(value[k])]
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [s for i in range(len(value)) for s in _strings(value[i])]
    return []


class Stack:
    """The engine's stack resources with the joins the rules need."""

    def __init__(self, resources: Sequence[Any]):
        self.resources = list(resources)

    def of(self, *types: str) -> list:
        wanted = set(types)
        return [r for r in self.resources if r.resource_type in wanted]

    def linked(self, res, prop: str, candidates: Sequence[Any],
               keys: Sequence[str] = ("id", "arn")) -> list:
        """Candidates that `res.props[prop]` refers to. Known values are matched against each
        candidate's `keys`; when the value is unknown (preview, before the target exists) the
        engine's property dependencies for `prop` decide. Raises UnknownValueError if neither can
        tell."""
        try:
            value = res.props.get(prop) if "." not in prop else get(res.props, prop)
            wanted = set(_strings(plain(value)))
        except UnknownValueError:
            deps = (getattr(res, "property_dependencies", None) or {}).get(prop.split(".")[0]) or []
            if not deps:
                raise
            dep_urns = {d.urn for d in deps}
            return [c for c in candidates if c.urn in dep_urns]
        if not wanted:
            return []
        return [c for c in candidates if any(peek(c, k) in wanted for k in keys)]

    def referring(self, target, siblings: Sequence[Any], prop: str,
                  keys: Sequence[str] = ("id", "arn")) -> list:
        """Siblings whose `prop` refers to `target` (e.g. versioning configs of a bucket).
        A sibling whose reference is unknown and has no property dependencies raises
        UnknownValueError: the rule cannot judge."""
        out = []
        for s in siblings:
            if target in self.linked(s, prop, [target], keys):
                out.append(s)
        return out


# ----------------------------------------------------------------------------------------------
# Names several families share (the pack may not import components/services/k8s_names.py)
# ----------------------------------------------------------------------------------------------
def custom_resource_type(api_version: str, kind: str) -> str:
    """The engine's type token of a Kubernetes custom resource: CRDs have no class in the
    pulumi-kubernetes SDK, the provider names them `kubernetes:<apiVersion>:<kind>`."""
    return f"kubernetes:{api_version}:{kind}"


KARPENTER_NODEPOOL = custom_resource_type("karpenter.sh/v1", "NodePool")
KARPENTER_NODECLASS = custom_resource_type("karpenter.k8s.aws/v1", "EC2NodeClass")
POOL_LABEL = "trainyard.io/pool"
"""Node label: the trainyard pool a node belongs to (every provisioner sets it)."""
EFA_LABEL = "trainyard.io/efa"
PURPOSE_LABEL = "trainyard.io/purpose"
"""On the nodes of pools that serve models (`inference`): Kueue does not queue for them."""
ACCELERATOR_LABEL = "trainyard.io/accelerator"
