"""Teams: one namespace per team (from `trainyard:teams`) with its training service account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components.config import TeamConfig
from components.k8s_names import TRAINING_SERVICE_ACCOUNT


@dataclass(frozen=True)
class TeamsArgs:
    teams: Sequence[TeamConfig]
    """Typed `trainyard:teams` entries; may be empty."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Cluster pieces that must exist first (and be deleted last)."""


class Teams(pulumi.ComponentResource):
    namespaces: dict[str, k8s.core.v1.Namespace]
    service_accounts: dict[str, k8s.core.v1.ServiceAccount]

    def __init__(self, name: str, args: TeamsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Teams", name, None, opts)
        self._args = args
        self.namespaces, self.service_accounts = {}, {}
        for team in args.teams:
            self._create_team(name, team)
        self.register_outputs({"namespaces": list(self.namespaces)})

    def _opts(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider,
                                      depends_on=[*self._args.depends_on, *depends_on])

    def _create_team(self, name: str, team: TeamConfig) -> None:
        ns = k8s.core.v1.Namespace(
            f"{name}-{team.name}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=team.name,
                labels={
                    "trainyard.io/team": team.name,
                    # Pod Security Admission: training pods need no privileges; `baseline` is
                    # enforced because EFA/huge-page pods are rejected by `restricted`'s
                    # seccomp/capability rules only when they ask for them, which ours don't.
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                }),
            opts=self._opts())
        self.namespaces[team.name] = ns
        self.service_accounts[team.name] = k8s.core.v1.ServiceAccount(
            f"{name}-{team.name}-{TRAINING_SERVICE_ACCOUNT}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=TRAINING_SERVICE_ACCOUNT, namespace=team.name,
                                                labels={"trainyard.io/team": team.name}),
            automount_service_account_token=False,
            opts=self._opts(ns))
