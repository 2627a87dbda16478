"""Hpo: what a hyperparameter search needs from the stack (`trainyard:hpo`): in every team
namespace, the `hpo` service account the search controller runs as and a Role that lets it
create, follow and delete TrainJobs in that namespace, nothing else. The searches themselves
(a controller Job and its spec) are rendered per search by `trainyard hpo render` and applied
by the team (docs/hpo.md); their budgets are checked against this section's ceilings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from components.services.trainjob import TRAINER_GROUP, TRAINJOB_PLURAL

SERVICE_ACCOUNT = "hpo"
ROLE = "hpo-controller"


def controller_rules() -> list[dict]:
    """Create, follow and delete TrainJobs in its own namespace; nothing else."""
    return [{"apiGroups": [TRAINER_GROUP], "resources": [TRAINJOB_PLURAL],
             "verbs": ["get", "list", "watch", "create", "delete"]}]


def rbac(namespace: str) -> list[dict]:
    """The controller's ServiceAccount, Role and RoleBinding in `namespace`."""
    meta = {"name": SERVICE_ACCOUNT, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta,
         "automountServiceAccountToken": True},  # it calls the Kubernetes API
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": ROLE, "namespace": namespace}, "rules": controller_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": ROLE, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                       "namespace": namespace}]},
    ]


@dataclass(frozen=True)
class HpoArgs:
    team_namespaces: Mapping[str, Any]
    """Team name -> its Namespace resource (required)."""
    provider: Any = None
    """Kubernetes provider (default: ambient)."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Hpo(pulumi.ComponentResource):
    def __init__(self, name: str, args: HpoArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Hpo", name, None, opts)
        for team, ns in sorted(args.team_namespaces.items()):
            child = pulumi.ResourceOptions(parent=self, provider=args.provider,
                                           depends_on=[*args.depends_on, ns])
            sa, role, binding = rbac(team)
            k8s.core.v1.ServiceAccount(
                f"{name}-{team}-sa", metadata=sa["metadata"],
                automount_service_account_token=sa["automountServiceAccountToken"], opts=child)
            k8s.rbac.v1.Role(f"{name}-{team}-role", metadata=role["metadata"],
                             rules=role["rules"], opts=child)
            k8s.rbac.v1.RoleBinding(f"{name}-{team}-binding", metadata=binding["metadata"],
                                    role_ref=binding["roleRef"], subjects=binding["subjects"],
                                    opts=child)
        self.register_outputs({"serviceAccount": SERVICE_ACCOUNT})
