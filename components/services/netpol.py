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


def allow_ingress_on(ports: Sequence[int]) -> dict:
    """Ingress on these ports from any address: for admission webhooks, which the EKS control
    plane calls from ENIs in the cluster's subnets (addresses a policy cannot tell from pods')."""
    return {"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [ANYWHERE], "ports": _ports(ports)}]}


def allow_egress_to(cidr: str, ports: Sequence[int]) -> dict:
    return {"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": cidr}}], "ports": _ports(ports)}]}


def allow_all_egress() -> dict:
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}
