"""Teams: one namespace per team (from `trainyard:teams`), ready for TrainJobs.

Per team:
- the Namespace, with Pod Security Admission labels (`baseline` enforced, `restricted` audited
  and warned: training pods need huge pages, shared memory and EFA devices, none of which
  `baseline` forbids, but training images usually run as root, which `restricted` does);
- a ResourceQuota capping the accelerators the namespace may request at once: `gpuQuota` without
  Kueue; with Kueue, what the team's ClusterQueue can admit at most (`gpu_ceilings`: nominal quota
  plus borrowing limit, components/services/kueue.py), never less, or pods Kueue admitted would be refused
  (the config refuses a gpuQuota below one node of every pool, since TrainJobs take whole nodes);
- a LimitRange giving containers without requests a small default, and capping a container's
  accelerators at the largest node's count (a typo'd 16 on 8-GPU nodes is refused at admission
  instead of pending forever). It sets no default *limits*: a default memory limit would be
  applied to training containers, which request memory but set no limit;
- NetworkPolicies: default deny in both directions, then the allows training needs (DNS; all
  traffic inside the namespace for torchrun's rendezvous and NCCL's TCP bootstrap; scraping of
  the throughput sidecar by the monitoring namespace; HTTPS out for S3 checkpoints/datasets and
  STS; the EKS Pod Identity agent). EFA traffic bypasses the kernel and is not subject to them;
  they are enforced by the VPC CNI's network-policy agent (components/compute/addons.py turns it on);
- the `trainer` service account the training role is bound to (the Pod Identity association
  belongs to the storage layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.compute.catalog import Catalog, load_catalog
from components.config import GpuPoolConfig, TeamConfig
from components.services import netpol
from components.services.k8s_names import GPU_RESOURCE, SYSTEM_NAMESPACES, TRAINING_SERVICE_ACCOUNT
from components.services.trainjob import exporter

TEAM_LABEL = "trainyard.io/team"
POD_IDENTITY_AGENT = "169.254.170.23/32"
"""Link-local address of the EKS Pod Identity agent (port 80) on every node."""
DEFAULT_REQUEST = {"cpu": "100m", "memory": "256Mi"}


@dataclass(frozen=True)
class TeamsArgs:
    teams: Sequence[TeamConfig]
    """Typed `trainyard:teams` entries; may be empty."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster pieces that must exist first (and be deleted last)."""
    gpu_pools: Sequence[GpuPoolConfig] = ()
    """The stack's GPU pools: which accelerator resources the quota covers and the per-container
    cap of the LimitRange. Default none (quota on nvidia.com/gpu only, no cap)."""
    monitoring_namespace: str = SYSTEM_NAMESPACES["monitoring"]
    """Namespace allowed to scrape training pods. Default `monitoring`."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""
    gpu_ceilings: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Team -> accelerator resource -> the most its Kueue ClusterQueue can admit
    (kueue.QuotaPlan.ceilings()): the ResourceQuota's value for that resource. Default: none
    (no Kueue), the quota is the team's gpuQuota."""


# ----------------------------------------------------------------------------------------------
# Pure values
# ----------------------------------------------------------------------------------------------
def namespace_labels(team: TeamConfig) -> dict[str, str]:
    return {
        TEAM_LABEL: team.name,
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }


def max_accelerators_per_node(pools: Sequence[GpuPoolConfig], catalog: Catalog) -> dict[str, int]:
    """Accelerator resource -> the most any node of the stack has."""
    out: dict[str, int] = {}
    for pool in pools:
        for t in pool.instance_types:
            spec = catalog.get(t)
            if spec.vendor:
                res = GPU_RESOURCE[spec.vendor]
                out[res] = max(out.get(res, 0), spec.gpus)
    return out


def quota_hard(team: TeamConfig, resources: Sequence[str],
               ceiling: Optional[Mapping[str, int]] = None) -> dict[str, str]:
    """ResourceQuota `hard`: extended resources can only be capped on requests. `ceiling`
    (resource -> count) replaces gpuQuota where Kueue may admit more (borrowed quota)."""
    ceiling = ceiling or {}
    return {f"requests.{r}": str(max(team.gpu_quota, ceiling.get(r, 0)))
            for r in sorted(set(resources))}


def limit_range_limits(max_per_node: dict[str, int]) -> list[dict]:
    limit = {"type": "Container", "defaultRequest": dict(DEFAULT_REQUEST)}
    if max_per_node:
        limit["max"] = {r: str(n) for r, n in sorted(max_per_node.items())}
    return [limit]


def network_policies(monitoring_namespace: str, metrics_port: int) -> dict[str, dict]:
    """Name -> NetworkPolicy spec, default deny first. `metrics_port`: the training-throughput
    sidecar's port, which the monitoring namespace may scrape."""
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        # torchrun's c10d rendezvous, NCCL's TCP bootstrap and socket transport between the
        # pods of a job (all in this namespace).
        "allow-same-namespace": netpol.allow_same_namespace(),
        "allow-monitoring-scrape": netpol.allow_ingress_from_namespace(monitoring_namespace,
                                                                       [metrics_port]),
        # S3 (checkpoints, datasets) through the VPC gateway endpoint has no fixed addresses
        # a policy could name, nor has STS: HTTPS to anywhere, nothing else.
        "allow-https-egress": netpol.allow_egress_to("0.0.0.0/0", [443]),
        "allow-pod-identity-agent": netpol.allow_egress_to(POD_IDENTITY_AGENT, [80]),
    }


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class Teams(pulumi.ComponentResource):
    namespaces: dict[str, k8s.core.v1.Namespace]
    service_accounts: dict[str, k8s.core.v1.ServiceAccount]
    quotas: dict[str, k8s.core.v1.ResourceQuota]

    def __init__(self, name: str, args: TeamsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Teams", name, None, opts)
        self._args = args
        catalog = args.catalog or load_catalog()
        self._max_per_node = max_accelerators_per_node(args.gpu_pools, catalog)
        self._resources = sorted(self._max_per_node) or [GPU_RESOURCE["nvidia"]]
        self.namespaces, self.service_accounts, self.quotas = {}, {}, {}
        for team in args.teams:
            self._create_team(name, team)
        self.register_outputs({"namespaces": list(self.namespaces)})

    def _opts(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                      depends_on=[*self._args.depends_on, *depends_on])

    def _meta(self, name: str, team: TeamConfig) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=team.name,
                                          labels={TEAM_LABEL: team.name})

    def _create_team(self, name: str, team: TeamConfig) -> None:
        ns = k8s.core.v1.Namespace(
            f"{name}-{team.name}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=team.name, labels=namespace_labels(team)),
            opts=self._opts())
        self.namespaces[team.name] = ns
        self.service_accounts[team.name] = k8s.core.v1.ServiceAccount(
            f"{name}-{team.name}-{TRAINING_SERVICE_ACCOUNT}",
            metadata=self._meta(TRAINING_SERVICE_ACCOUNT, team),
            automount_service_account_token=False,
            opts=self._opts(ns))
        self.quotas[team.name] = k8s.core.v1.ResourceQuota(
            f"{name}-{team.name}-gpu-quota",
            metadata=self._meta("gpu-quota", team),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(hard=quota_hard(
                team, self._resources, self._args.gpu_ceilings.get(team.name))),
            opts=self._opts(ns))
        k8s.core.v1.LimitRange(
            f"{name}-{team.name}-limits",
            metadata=self._meta("defaults", team),
            spec={"limits": limit_range_limits(self._max_per_node)},
            opts=self._opts(ns))
        policies = network_policies(self._args.monitoring_namespace, int(exporter()["port"]))
        for policy, spec in policies.items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{team.name}-{policy}",
                metadata=self._meta(policy, team),
                spec=spec,
                opts=self._opts(ns))
