"""NetworkPolicy building blocks (pure dicts) shared by the team, monitoring and Kubeflow
namespaces: every namespace the platform creates starts from `deny_all()` and adds explicit
allows. The VPC CNI's network-policy agent enforces them (components/compute/addons.py turns it on);
hostNetwork pods (node-exporter) and EFA traffic, which bypasses the kernel, are not subject.
"""

from __future__ import annotations

from collections.abc import Sequence

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by Kubernetes on every namespace: a stable selector for namespaceSelector."""
ANYWHERE = {"ipBlock": {"cidr": "0.0.0.0/0"}}
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
"""RFC 1918 and the shared range (100.64/10) often used for EKS secondary CIDRs: where a VPC's
addresses, and so the EKS control plane's ENIs in the cluster's subnets, come from in practice,
and no internet address. A VPC on other addresses must pass its CIDR as `sources`."""


def _ports(ports: Sequence[int], protocol: str = "TCP") -> list[dict]:
    return [{"protocol": protocol, "port": p} for p in ports]


def namespace_peer(namespace: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}


def deny_all() -> dict:
    return {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def allow_dns() -> dict:
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
        "to": [{**namespace_peer("kube-system"),
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": _ports([53], "UDP") + _ports([53]),
    }]}


def allow_same_namespace() -> dict:
    everything = {"podSelector": {}}
    return {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [everything]}], "egress": [{"to": [everything]}]}


def allow_ingress_from_namespace(namespace: str, ports: Sequence[int] = ()) -> dict:
    rule: dict = {"from": [namespace_peer(namespace)]}
    if ports:
        rule["ports"] = _ports(ports)
    return {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [rule]}


def allow_ingress_on(ports: Sequence[int], sources: Sequence[str] = PRIVATE_RANGES) -> dict:
    """Ingress on these ports from `sources` (CIDRs): for admission webhooks and aggregated
    APIs, which the EKS control plane calls from cross-account ENIs in the cluster's subnets
    (addresses a podSelector cannot name). Default: the private ranges, so never from the
    internet; pass the VPC CIDR to narrow it further."""
    return {"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in sources],
                         "ports": _ports(ports)}]}


def allow_egress_to(cidr: str, ports: Sequence[int]) -> dict:
    return {"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": _ports(ports)}]}


def allow_egress_to_cidrs(cidrs: Sequence[str], ports: Sequence[int] = ()) -> dict:
    """Egress to these CIDRs, on `ports` (default: every port)."""
    rule: dict = {"to": [{"ipBlock": {"cidr": c}} for c in cidrs]}
    if ports:
        rule["ports"] = _ports(ports)
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [rule]}


def allow_all_egress() -> dict:
    """Egress anywhere on every port: undoes the default deny for egress (the pack's
    netpol-no-open-egress refuses it unless a stack lists it with a reason)."""
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
