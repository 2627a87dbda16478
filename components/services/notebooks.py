"""Notebooks: JupyterHub (the official chart, pinned in components/data/charts.yaml) where
researchers try code on the platform before it becomes a TrainJob (`trainyard:notebooks`).

- The hub and proxy run in the `notebooks` namespace on the system nodes; the proxy's service is
  ClusterIP (reach it with `kubectl port-forward` or an internal ingress) unless the config says
  `public` (and the policy config allows it: notebooks-not-public).
- Each team gets its own profiles, shown only to members of the team's group (OIDC group or
  GitHub `org:team`): CPU; one GPU on the configured evaluation/inference-class pool; optionally a
  whole node. Servers start in the team's namespace as its `notebook` service account, which EKS
  Pod Identity maps to the training role (the datasets and checkpoints the team's jobs see) and
  which may create TrainJobs in that namespace only. GPU notebooks carry the team's Kueue queue
  label, so they count against the team's GPU quota like its jobs.
- The notebook image is the training image's `notebook` stage (workloads/Dockerfile): code that
  runs in a notebook runs in a TrainJob.
- Home directories are EFS claims of the platform's EFS StorageClass: one dynamically provisioned
  access point per user, owned by a non-root POSIX user.
- Idle servers are culled: the hub's culler after `cullIdleMinutes`; GPU servers shut themselves
  down after `gpuCullIdleMinutes` without activity (Jupyter Server's own timeouts), sooner.
- Authentication: OIDC (GenericOAuthenticator) or GitHub OAuth; the client secret comes from
  Secrets Manager through External Secrets when the stack runs it (docs/notebooks.md). `dummy`
  (no password) is refused outside dev by config validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.compute.addons import chart
from components.compute.catalog import Catalog, load_catalog
from components.config.types import GpuPoolConfig, NotebooksConfig
from components.services import netpol
from components.services.k8s_names import (
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    LOCAL_QUEUE,
    POOL_LABEL,
    QUEUE_LABEL,
)
from components.services.monitoring import release_chart

NAMESPACE = "notebooks"
RELEASE = "jupyterhub"
CHART = "jupyterhub"
SERVICE_ACCOUNT = "notebook"
"""Per team namespace: what notebook servers run as (Pod Identity, TrainJob submission)."""
HUB_SERVICE_ACCOUNT = "hub"
"""The chart's hub service account (in the notebooks namespace); spawns into team namespaces."""
OAUTH_SECRET = "notebooks-oauth"
OAUTH_SECRET_KEY = "client-secret"
NOTEBOOK_PORT = 8888
HUB_PORT = 8081
EFS_STORAGE_CLASS = "trainyard-efs"
SINGLEUSER_LABELS = {"component": "singleuser-server"}
OUTPUTS_CONFIGMAP = "trainyard-stack-outputs"
OUTPUTS_MOUNT = "/etc/trainyard"
"""Where a notebook finds `outputs.json` (the stack outputs `trainyard job render --outputs`
reads), so `trainyard job render ... --submit` works from a notebook terminal."""
JOB_OUTPUT_KEYS = ("checkpointsBucket", "checkpointPrefix", "trainingRuntimes",
                   "sharedClaimName", "fsxClaimName", "trainingServiceAccount", "localQueue",
                   "clusterQueues")
"""KubeSpawner's label on every server pod."""


def _gpu_args(minutes: int) -> list[str]:
    """Jupyter Server shuts itself down after `minutes` without activity (kernels and
    terminals idle); the kernels themselves are culled after the same time."""
    seconds = minutes * 60
    return [f"--ServerApp.shutdown_no_activity_timeout={seconds}",
            f"--MappingKernelManager.cull_idle_timeout={seconds}",
            "--MappingKernelManager.cull_interval=60",
            "--MappingKernelManager.cull_connected=True"]


def profiles(config: NotebooksConfig, teams: Sequence[str],
             pools: Mapping[str, GpuPoolConfig], catalog: Catalog) -> list[dict]:
    """KubeSpawner profiles, each with the team it belongs to (`trainyard_team`, removed before
    KubeSpawner sees it)."""
    out = []
    for team in teams:
        base = {"namespace": team, "service_account": SERVICE_ACCOUNT,
                "volumes": [{"name": "stack-outputs",
                             "configMap": {"name": OUTPUTS_CONFIGMAP}}],
                "volume_mounts": [{"name": "stack-outputs", "mountPath": OUTPUTS_MOUNT,
                                   "readOnly": True}],
                "cpu_guarantee": _cpu(config.cpu), "cpu_limit": _cpu(config.cpu),
                "mem_guarantee": config.memory, "mem_limit": config.memory}
        out.append({"trainyard_team": team, "slug": f"{team}-cpu",
                    "display_name": f"{team}: CPU ({config.cpu} vCPU, {config.memory})",
                    "default": True, "kubespawner_override": dict(base)})
        for kind, pool_name in (("gpu", config.gpu_pool), ("node", config.full_node_pool)):
            if not pool_name:
                continue
            pool = pools[pool_name]
            spec = catalog.get(pool.instance_types[0])
            vendor = "nvidia"
            gpus = 1 if kind == "gpu" else spec.gpus
            override = {
                **base,
                "extra_resource_limits": {GPU_RESOURCE[vendor]: str(gpus)},
                "node_selector": {POOL_LABEL: pool_name},
                "tolerations": [{"key": GPU_TAINT_KEY[vendor], "operator": "Exists",
                                 "effect": "NoSchedule"}],
                "extra_labels": {QUEUE_LABEL: LOCAL_QUEUE},
                "args": _gpu_args(config.gpu_cull_idle_minutes),
            }
            if kind == "node":  # the whole node's CPU and memory, less what the system keeps
                override.update(cpu_guarantee=spec.vcpus * 0.9, cpu_limit=spec.vcpus * 0.9,
                                mem_guarantee=f"{int(spec.memory_gib * 0.85)}Gi",
                                mem_limit=f"{int(spec.memory_gib * 0.85)}Gi")
            label = "1 GPU" if kind == "gpu" else f"a whole {spec.name} ({gpus} GPUs)"
            out.append({"trainyard_team": team, "slug": f"{team}-{kind}",
                        "display_name": f"{team}: {label} on {pool_name} (culled after "
                                        f"{config.gpu_cull_idle_minutes} idle minutes)",
                        "kubespawner_override": override})
    return out


def _cpu(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


PROFILE_FILTER = """\
# trainyard: each team's profiles only for the team's members (their groups come from the
# authenticator: OIDC groups claim, or GitHub org:team). Admins see every profile.
import json

_TRAINYARD_PROFILES = json.loads({profiles!r})


def _trainyard_profiles(spawner):
    groups = {{g.name for g in spawner.user.groups}}
    allowed = []
    for p in _TRAINYARD_PROFILES:
        team = p["trainyard_team"]
        if spawner.user.admin or team in groups or {org!r} + ":" + team in groups:
            allowed.append({{k: v for k, v in p.items() if k != "trainyard_team"}})
    return allowed


c.KubeSpawner.profile_list = _trainyard_profiles
"""


def profiles_from_values(values: Mapping[str, Any]) -> list[dict]:
    """The profiles a jupyterhub release's values carry (the JSON the profile filter embeds):
    what `trainyard cost` and the policies read back from a plan."""
    import ast

    code = ((values.get("hub") or {}).get("extraConfig") or {}).get("trainyard-profiles") or ""
    marker = "_TRAINYARD_PROFILES = json.loads("
    start = code.find(marker)
    if start < 0:
        return []
    literal = code[start + len(marker):code.index(")\n", start)]
    return json.loads(ast.literal_eval(literal))


def authenticator_config(config: NotebooksConfig, teams: Sequence[str]) -> dict:
    """`hub.config` for the authenticator. The client secret is not here: the hub reads it from
    OAUTH_CLIENT_SECRET (a Secret External Secrets fills)."""
    a = config.auth
    common = {"admin_users": list(a.admin_users)}
    if a.kind == "dummy":
        return {"JupyterHub": {"authenticator_class": "dummy"},
                "Authenticator": {**common, "allow_all": True}}
    if a.kind == "oidc":
        return {"JupyterHub": {"authenticator_class": "generic-oauth"},
                "Authenticator": common,
                "GenericOAuthenticator": {
                    "client_id": a.client_id, "oauth_callback_url": a.callback_url,
                    "authorize_url": a.authorize_url, "token_url": a.token_url,
                    "userdata_url": a.userdata_url, "scope": ["openid", "profile", "email"],
                    "username_claim": "preferred_username", "manage_groups": True,
                    "auth_state_groups_key": f"oauth_user.{a.groups_claim}",
                    "allowed_groups": list(teams)}}
    return {"JupyterHub": {"authenticator_class": "github"},
            "Authenticator": common,
            "GitHubOAuthenticator": {
                "client_id": a.client_id, "oauth_callback_url": a.callback_url,
                "scope": ["read:org"], "populate_teams_in_auth_state": True,
                "manage_groups": True,
                "allowed_organizations": [f"{a.organization}:{t}" for t in teams]}}


def hub_values(config: NotebooksConfig, teams: Sequence[str], pools: Mapping[str, GpuPoolConfig],
               system_selector: Mapping[str, str], catalog: Optional[Catalog] = None) -> dict:
    """The jupyterhub release's values (pure: the tests read every setting)."""
    catalog = catalog or load_catalog()
    image, _, tag = config.image.rpartition(":")
    hub_config = authenticator_config(config, teams)
    hub_config["JupyterHub"].update(active_server_limit=config.max_users, admin_access=False)
    restricted = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                  "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    hub: dict[str, Any] = {
        "config": hub_config,
        "nodeSelector": dict(system_selector),
        "extraConfig": {"trainyard-profiles": PROFILE_FILTER.format(
            profiles=json.dumps(profiles(config, teams, pools, catalog)),
            org=config.auth.organization)},
        "containerSecurityContext": {**restricted, "runAsUser": 1000, "runAsGroup": 1000},
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
        "networkPolicy": {"enabled": True},
    }
    if config.auth.kind != "dummy":
        hub["extraEnv"] = {"OAUTH_CLIENT_SECRET": {"valueFrom": {"secretKeyRef": {
            "name": OAUTH_SECRET, "key": OAUTH_SECRET_KEY}}}}
    service: dict[str, Any] = {"type": "ClusterIP"}
    if config.public:
        service = {"type": "LoadBalancer", "annotations": {
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}}
    return {
        "hub": hub,
        "proxy": {"service": service,
                  "chp": {"nodeSelector": dict(system_selector),
                          "containerSecurityContext": {**restricted, "runAsUser": 65534},
                          "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                        "limits": {"cpu": "500m", "memory": "512Mi"}},
                          "networkPolicy": {"enabled": True}}},
        "singleuser": {
            "image": {"name": image, "tag": tag},
            "cmd": "jupyterhub-singleuser",
            "uid": 1000, "fsGid": 100,
            "serviceAccountName": SERVICE_ACCOUNT,
            "cpu": {"guarantee": _cpu(config.cpu), "limit": _cpu(config.cpu)},
            "memory": {"guarantee": config.memory, "limit": config.memory},
            "storage": {"type": "dynamic", "capacity": f"{config.home_gib}Gi",
                        "homeMountPath": "/home/jovyan",
                        "dynamic": {"storageClass": EFS_STORAGE_CLASS,
                                    "pvcNameTemplate": "home-{username}",
                                    "storageAccessModes": ["ReadWriteMany"]}},
            "allowPrivilegeEscalation": False,
            "extraPodConfig": {"securityContext": {"runAsNonRoot": True,
                                                   "seccompProfile": {"type": "RuntimeDefault"}}},
            "networkPolicy": {"enabled": True, "egressAllowRules": {
                "cloudMetadataServer": False, "privateIPs": False, "nonPrivateIPs": True,
                "dnsPortsPrivateIPs": True}},
        },
        "cull": {"enabled": True, "timeout": config.cull_idle_minutes * 60, "every": 300,
                 "users": False, "removeNamedServers": False},
        # No placeholder pods (they would hold GPU nodes up) and no image pre-puller DaemonSet
        # (it would pull the multi-GB image onto every node, GPU nodes included).
        "scheduling": {"userScheduler": {"enabled": False},
                       "userPlaceholder": {"enabled": False},
                       "podPriority": {"enabled": False}},
        "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}},
        "ingress": {"enabled": False},
    }


def hub_rules() -> list[dict]:
    """What the hub needs in each team namespace to run servers there (KubeSpawner: pods,
    their home claims, events to report progress)."""
    return [{"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]}]


def notebook_rules() -> list[dict]:
    """What a notebook may do in its own namespace: submit and follow TrainJobs."""
    return [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
             "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": ["trainer.kubeflow.org"],
             "resources": ["trainingruntimes", "clustertrainingruntimes"],
             "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]


def hub_network_policies(teams: Sequence[str]) -> dict[str, dict]:
    """In the notebooks namespace, beside the chart's own policies for the hub and proxy (which
    allow what they need, the proxy's public port included): deny the rest, and let notebook
    servers in the team namespaces reach the hub's API (the chart only admits servers in its own
    namespace)."""
    servers = {"matchLabels": dict(SINGLEUSER_LABELS)}
    return {
        "default-deny": netpol.deny_all(),
        "allow-dns": netpol.allow_dns(),
        "allow-hub-from-team-notebooks": {
            "podSelector": {"matchLabels": {"component": "hub"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{**netpol.namespace_peer(t), "podSelector": servers}
                                  for t in teams],
                         "ports": [{"protocol": "TCP", "port": HUB_PORT}]}]},
    }


def team_network_policies() -> dict[str, dict]:
    """In each team namespace, on notebook servers only: the proxy and hub reach the server,
    the server reaches the hub's API (the team's own policies already allow DNS, HTTPS and the
    Pod Identity agent)."""
    servers = {"matchLabels": dict(SINGLEUSER_LABELS)}
    return {
        "allow-notebook-from-hub": {
            "podSelector": servers, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{**netpol.namespace_peer(NAMESPACE), "podSelector": {
                "matchExpressions": [{"key": "component", "operator": "In",
                                      "values": ["proxy", "hub"]}]}}],
                "ports": [{"protocol": "TCP", "port": NOTEBOOK_PORT}]}]},
        "allow-notebook-to-hub": {
            "podSelector": servers, "policyTypes": ["Egress"],
            "egress": [{"to": [{**netpol.namespace_peer(NAMESPACE),
                                "podSelector": {"matchLabels": {"component": "hub"}}}],
                        "ports": [{"protocol": "TCP", "port": HUB_PORT}]}]},
    }


@dataclass(frozen=True)
class NotebooksArgs:
    config: NotebooksConfig
    """Parsed `trainyard:notebooks` (required)."""
    team_namespaces: Mapping[str, Any]
    """Team name -> its Namespace resource (required)."""
    pools: Mapping[str, GpuPoolConfig]
    """The stack's pools by name (required)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster name, for the Pod Identity associations (required)."""
    training_role_arn: pulumi.Input[str]
    """Role the notebooks assume (the training role: same data as the team's jobs)."""
    provider: Any = None
    """Kubernetes provider (default: ambient)."""
    depends_on: Sequence[pulumi.Resource] = ()
    system_selector: Mapping[str, str] = field(default_factory=dict)
    """Node selector of the system nodes (hub and proxy run there)."""
    stack_outputs: pulumi.Input[str] = "{}"
    """JSON of the stack outputs job rendering needs (JOB_OUTPUT_KEYS), mounted into every
    notebook at /etc/trainyard/outputs.json."""
    secret_store: Optional[str] = None
    """Name of the ClusterSecretStore for Secrets Manager (External Secrets), when the stack
    runs it: the OAuth client secret is copied from `auth.clientSecretName`. None: create the
    `notebooks-oauth` Secret yourself (docs/notebooks.md)."""
    tags: Mapping[str, str] = field(default_factory=dict)


class Notebooks(pulumi.ComponentResource):
    def __init__(self, name: str, args: NotebooksArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Notebooks", name, None, opts)
        self._name, self._args = name, args
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={
                "pod-security.kubernetes.io/enforce": "restricted"}),
            opts=self._opts())
        self._create_oauth_secret()
        self._create_team_access()
        for policy, spec in hub_network_policies(sorted(args.team_namespaces)).items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}", metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=policy, namespace=NAMESPACE), spec=spec, opts=self._opts(self.namespace))
        pin = chart(CHART)
        chart_ref, repo = release_chart(pin)
        teams = sorted(args.team_namespaces)
        self.release = k8s.helm.v3.Release(
            f"{name}-hub", name=RELEASE, chart=chart_ref, version=pin.version,
            repository_opts=repo, namespace=NAMESPACE,
            values=hub_values(args.config, teams, args.pools, args.system_selector),
            max_history=5, timeout=900, atomic=True, cleanup_on_fail=True,
            opts=self._opts(self.namespace, *self._team_objects))
        self.register_outputs({"namespace": NAMESPACE, "service": "proxy-public"})

    def _opts(self, *extra: pulumi.Resource) -> pulumi.ResourceOptions:
        a = self._args
        return pulumi.ResourceOptions(parent=self, provider=a.provider,
                                      depends_on=[*a.depends_on, *extra])

    def _create_oauth_secret(self) -> None:
        a, n = self._args, self._name
        self.oauth_secret = None
        if a.config.auth.kind == "dummy" or not a.secret_store:
            return
        self.oauth_secret = k8s.apiextensions.CustomResource(
            f"{n}-oauth", api_version="external-secrets.io/v1", kind="ExternalSecret",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=OAUTH_SECRET, namespace=NAMESPACE),
            spec={"refreshInterval": "1h",
                  "secretStoreRef": {"kind": "ClusterSecretStore", "name": a.secret_store},
                  "target": {"name": OAUTH_SECRET, "creationPolicy": "Owner"},
                  "data": [{"secretKey": OAUTH_SECRET_KEY,
                            "remoteRef": {"key": a.config.auth.client_secret_name}}]},
            opts=self._opts(self.namespace))

    def _create_team_access(self) -> None:
        a, n = self._args, self._name
        self._team_objects: list[pulumi.Resource] = []
        for team, ns in sorted(a.team_namespaces.items()):
            self._team_objects.append(k8s.core.v1.ConfigMap(
                f"{n}-{team}-outputs", metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=OUTPUTS_CONFIGMAP, namespace=team),
                data={"outputs.json": a.stack_outputs}, opts=self._opts(ns)))
            sa = k8s.core.v1.ServiceAccount(
                f"{n}-{team}-sa", metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=SERVICE_ACCOUNT, namespace=team),
                automount_service_account_token=True,  # it submits TrainJobs: needs its token
                opts=self._opts(ns))
            for who, rules, subject in (
                    ("hub", hub_rules(), (HUB_SERVICE_ACCOUNT, NAMESPACE)),
                    ("notebook", notebook_rules(), (SERVICE_ACCOUNT, team))):
                role = k8s.rbac.v1.Role(
                    f"{n}-{team}-{who}", metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=f"notebooks-{who}", namespace=team),
                    rules=rules, opts=self._opts(ns))
                binding = k8s.rbac.v1.RoleBinding(
                    f"{n}-{team}-{who}", metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=f"notebooks-{who}", namespace=team),
                    role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io",
                                                     kind="Role", name=f"notebooks-{who}"),
                    subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=subject[0],
                                                      namespace=subject[1])],
                    opts=self._opts(ns, role))
                self._team_objects += [role, binding]
            for policy, spec in team_network_policies().items():
                self._team_objects.append(k8s.networking.v1.NetworkPolicy(
                    f"{n}-{team}-{policy}", metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=policy, namespace=team), spec=spec, opts=self._opts(ns)))
            aws.eks.PodIdentityAssociation(
                f"{n}-{team}", cluster_name=a.cluster_name, namespace=team,
                service_account=SERVICE_ACCOUNT, role_arn=a.training_role_arn,
                tags={**a.tags, "Name": f"{n}-{team}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*a.depends_on, ns, sa]))
            self._team_objects.append(sa)
