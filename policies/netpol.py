"""NetworkPolicy content: the isolation a namespace's policies promise, and that something enforces
them at all.

A NetworkPolicy selects pods and, for each direction it lists in policyTypes, allows only what its
rules say; policies add up (any allow wins). So one policy selecting every pod with an empty
rule (`ingress: [{}]`, `egress: [{}]`) or a rule to/from 0.0.0.0/0 undoes a default deny, and a
cluster whose CNI does not enforce policies ignores all of them: the VPC CNI enforces them only
with the add-on's `enableNetworkPolicy: "true"` (its network-policy agent).

Deliberate openings (HTTPS to AWS APIs whose addresses no policy can name, Prometheus scraping
every namespace) are listed per stack in policies/config/<env>.json, each with its reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from fnmatch import fnmatch
from typing import Any, Optional

from pulumi_policy import Severity

from .common import (
    ADVISORY,
    MANDATORY,
    Refs,
    Stack,
    UnknownValueError,
    get,
    items,
    peek,
    plain,
    resource_rule,
    schema,
    short,
    stack_rule,
    truthy,
)
from .kubernetes import (
    CLUSTER_SCOPED,
    HELM_CHART_V4,
    HELM_RELEASE,
    NAMESPACE,
    NETWORK_POLICY,
    _objects_in,
    is_k8s_object,
    kind_of,
    pod_specs,
)
from .pod_settings import ADDON, parse_config_values

CLUSTER = "aws:eks/cluster:Cluster"
SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease"]
OTHER_ENFORCERS = ("calico", "tigera-operator", "cilium", "antrea")
"""Helm charts whose CNI (or policy engine) enforces NetworkPolicies instead of the VPC CNI's
agent."""

EXCEPTIONS = {
    "type": "array", "default": [],
    "items": {"type": "object", "required": ["namespace", "policy", "reason"], "properties": {
        "namespace": {"type": "string"}, "policy": {"type": "string"},
        "reason": {"type": "string"}}},
    "description": "Deliberate openings: {namespace, policy (metadata.name), reason}; shell "
                   "patterns (`*`) match several namespaces."}


def excepted(props: Any, exceptions: Sequence[Mapping]) -> Optional[str]:
    """The reason a configured exception gives for this NetworkPolicy, if one matches."""
    ns, name = str(get(props, "metadata.namespace", "")), str(get(props, "metadata.name", ""))
    for e in exceptions:
        if isinstance(e, Mapping) and e.get("reason") and \
                fnmatch(ns, str(e.get("namespace", ""))) and fnmatch(name, str(e.get("policy", ""))):
            return str(e["reason"])
    return None


def selects_all(spec: Mapping) -> bool:
    sel = spec.get("podSelector") or {}
    return not sel.get("matchLabels") and not sel.get("matchExpressions")


def policy_types(spec: Mapping) -> set:
    """policyTypes, or what Kubernetes defaults them to (Ingress, plus Egress with egress
    rules)."""
    given = spec.get("policyTypes")
    if given:
        return set(given)
    return {"Ingress"} | ({"Egress"} if spec.get("egress") else set())


def denies(spec: Mapping) -> set:
    """The directions this policy closes for every pod of its namespace (no rule in them)."""
    if not selects_all(spec):
        return set()
    return {d for d in policy_types(spec) if not spec.get(d.lower())}


def open_peer(peer: Any) -> bool:
    """An ipBlock covering every address (0.0.0.0/0, ::/0) with nothing carved out."""
    block = peer.get("ipBlock") if isinstance(peer, Mapping) else None
    if not isinstance(block, Mapping):
        return False
    try:
        net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
    except ValueError:
        return False
    return net.prefixlen == 0 and not block.get("except")


def anywhere(rule: Mapping, key: str) -> bool:
    """A rule whose peers (`from`/`to`) admit every address: none listed, or an open ipBlock."""
    peers = rule.get(key)
    return not peers or any(open_peer(p) for p in peers)


def ports_text(rule: Mapping) -> Optional[str]:
    ports = [p for p in rule.get("ports") or [] if isinstance(p, Mapping)]
    if not ports:
        return None
    return ", ".join(f"{p.get('protocol', 'TCP')}/{p.get('port', 'all')}"
                     + (f"-{p['endPort']}" if p.get("endPort") else "") for p in ports)


# ----------------------------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------------------------
def _namespaces_with_pods(stack: Stack) -> dict[str, Any]:
    """Namespace name -> the resource to report on: each Namespace the plan creates, and each
    namespace a Helm release or a pod-bearing object lands in."""
    out: dict[str, Any] = {}
    for ns in stack.of(NAMESPACE):
        name = peek(ns, "metadata.name")
        if name:
            out[name] = ns
    for r in stack.resources:
        if r.resource_type in (HELM_RELEASE, HELM_CHART_V4):
            ns = peek(r, "namespace")
        elif is_k8s_object(r.resource_type) and kind_of(r.resource_type) not in CLUSTER_SCOPED \
                and _has_pods(r):
            ns = peek(r, "metadata.namespace")
        else:
            continue
        if ns and ns not in out:
            out[ns] = r
    return out


def _has_pods(r) -> bool:
    try:
        return any(True for _ in pod_specs(plain(r.props)))
    except UnknownValueError:
        return False  # discovery only: an object with unknown fields is not counted


@stack_rule(
    name="netpol-default-deny",
    description="Every namespace that runs pods (created by the plan, or targeted by a Helm "
                "release or workload) has a default deny for ingress and egress: a "
                "NetworkPolicy selecting all pods with no rules; a policy named like a default "
                "deny must not allow anything.",
    family="kubernetes", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(checkov=("CKV2_K8S_6",), cis=("4.3.2",)),
    config=schema(exemptNamespaces={
        "type": "array", "items": {"type": "string"}, "default": SYSTEM_NAMESPACES,
        "description": "Namespaces without a default deny (the cluster's own add-ons run in "
                       "kube-system)."}),
    remediation="Add a NetworkPolicy {podSelector: {}, policyTypes: [Ingress, Egress]} with no "
                "rules in the namespace, then explicit allows beside it; never put rules into "
                "the deny policy itself.")
def netpol_default_deny(stack: Stack, cfg, report):
    for policy in stack.of(NETWORK_POLICY):
        name = str(get(policy.props, "metadata.name", ""))
        spec = plain(get(policy.props, "spec") or {})
        if ("deny" in name.lower()) and (spec.get("ingress") or spec.get("egress")
                                         or not selects_all(spec)):
            report(f"NetworkPolicy {name} in {get(policy.props, 'metadata.namespace')} is named "
                   "as a default deny but selects only some pods or allows traffic: restore "
                   "{podSelector: {}, policyTypes: [Ingress, Egress]} without rules and move "
                   "allows into their own policies.", policy.urn)
    for ns_name, target in sorted(_namespaces_with_pods(stack).items()):
        if ns_name in cfg["exemptNamespaces"]:
            continue
        if target.resource_type == NAMESPACE:
            policies = _objects_in(stack, target, (NETWORK_POLICY,))
        else:
            policies = [p for p in stack.of(NETWORK_POLICY)
                        if peek(p, "metadata.namespace") == ns_name]
        closed = set()
        for p in policies:
            closed |= denies(plain(get(p.props, "spec") or {}))
        missing = {"Ingress", "Egress"} - closed
        if missing:
            report(f"namespace {ns_name} runs pods without a default deny for "
                   f"{' and '.join(sorted(missing))}: add a NetworkPolicy selecting all pods "
                   "with policyTypes [Ingress, Egress] and no rules.", target.urn)


@resource_rule(
    name="netpol-no-open-ingress",
    description="No NetworkPolicy admits ingress from anywhere: a rule without `from` peers, "
                "or with an ipBlock of 0.0.0.0/0 or ::/0, unless the stack's config lists it "
                "with a reason.",
    family="kubernetes", types=(NETWORK_POLICY,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(cis=("4.3.2",), other=("k8s-docs:network-policies",)),
    config=schema(allowedOpenIngress=EXCEPTIONS),
    remediation="Name the sources: a namespaceSelector/podSelector, or the VPC CIDR for callers "
                "outside the pod network (the EKS control plane calls webhooks from ENIs in "
                "the cluster's subnets).")
def netpol_no_open_ingress(args, cfg, report):
    if excepted(args.props, cfg["allowedOpenIngress"]):
        return
    spec = plain(get(args.props, "spec") or {})
    if "Ingress" not in policy_types(spec):
        return
    for i, rule in enumerate(spec.get("ingress") or []):
        if isinstance(rule, Mapping) and anywhere(rule, "from"):
            on = ports_text(rule)
            report(f"ingress[{i}] of {get(args.props, 'metadata.name') or short(args.urn)} "
                   f"admits every source{' on ' + on if on else ' on every port'}: name the "
                   "namespaces, pods or CIDRs that need it.")


@resource_rule(
    name="netpol-no-open-egress",
    description="No NetworkPolicy allows egress to anywhere on every port (an empty rule, or "
                "0.0.0.0/0 without ports), unless the stack's config lists it with a reason.",
    family="kubernetes", types=(NETWORK_POLICY,), level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(cis=("4.3.2",), other=("k8s-docs:network-policies",)),
    config=schema(allowedOpenEgress=EXCEPTIONS),
    remediation="Allow egress to named peers, or to the CIDRs and ports the pods need (HTTPS "
                "only, the VPC CIDR...).")
def netpol_no_open_egress(args, cfg, report):
    _open_egress(args, cfg["allowedOpenEgress"], report, with_ports=False)


@resource_rule(
    name="netpol-egress-anywhere-on-ports",
    description="NetworkPolicies that allow egress to any address on some ports (typically "
                "HTTPS to 0.0.0.0/0) are listed in the stack's config with a reason.",
    family="kubernetes", types=(NETWORK_POLICY,), level=ADVISORY, severity=Severity.MEDIUM,
    refs=Refs(other=("k8s-docs:network-policies", "aws-docs:vpc-endpoints")),
    config=schema(allowedOpenEgress=EXCEPTIONS),
    remediation="Narrow the destination (the VPC CIDR reaches interface endpoints), or list the "
                "policy in allowedOpenEgress with the reason it needs the internet.")
def netpol_egress_anywhere_on_ports(args, cfg, report):
    _open_egress(args, cfg["allowedOpenEgress"], report, with_ports=True)


def _open_egress(args, exceptions, report, with_ports: bool) -> None:
    if excepted(args.props, exceptions):
        return
    spec = plain(get(args.props, "spec") or {})
    if "Egress" not in policy_types(spec):
        return
    name = get(args.props, "metadata.name") or short(args.urn)
    for i, rule in enumerate(spec.get("egress") or []):
        if not isinstance(rule, Mapping) or not anywhere(rule, "to"):
            continue
        on = ports_text(rule)
        if on and with_ports:
            report(f"egress[{i}] of {name} allows {on} to any address: narrow it, or list "
                   "it in allowedOpenEgress with the reason.")
        elif not on and not with_ports:
            report(f"egress[{i}] of {name} allows every port to any address, which undoes "
                   "the namespace's default deny: allow named peers and ports instead.")


@stack_rule(
    name="vpc-cni-network-policy-enabled",
    description="When the plan declares NetworkPolicies, something enforces them: the vpc-cni "
                "add-on's configurationValues set enableNetworkPolicy \"true\" (or a Calico/"
                "Cilium release is installed).",
    family="kubernetes", level=MANDATORY, severity=Severity.HIGH,
    refs=Refs(cis=("4.3.1",), other=("aws-docs:cni-network-policy",)),
    remediation="Set configuration_values='{\"enableNetworkPolicy\": \"true\"}' on the vpc-cni "
                "add-on (VPC CNI >= 1.14).")
def vpc_cni_network_policy_enabled(stack: Stack, cfg, report):
    policies = stack.of(NETWORK_POLICY)
    if not policies:
        return
    for r in stack.of(HELM_RELEASE, HELM_CHART_V4):
        chart = str(peek(r, "chart") or "").rstrip("/").rsplit("/", 1)[-1]
        if chart in OTHER_ENFORCERS:
            return
    cnis = [a for a in stack.of(ADDON) if peek(a, "addonName") == "vpc-cni"]
    if not cnis:
        target = (stack.of(CLUSTER) or policies)[0]
        report(f"{len(policies)} NetworkPolicies but no vpc-cni add-on (nor another enforcer) "
               "in the plan: manage the vpc-cni add-on with enableNetworkPolicy \"true\".",
               target.urn)
        return
    for a in cnis:
        values = parse_config_values(get(a.props, "configurationValues"))
        flag = values.get("enableNetworkPolicy") if isinstance(values, Mapping) else None
        if not truthy(flag):
            report(f"the vpc-cni add-on {short(a.urn)} does not set enableNetworkPolicy "
                   f"\"true\" (it is {flag!r}): the {len(policies)} NetworkPolicies would be "
                   "accepted and silently ignored.", a.urn)


__all__ = ["denies", "open_peer", "excepted", "items"]
