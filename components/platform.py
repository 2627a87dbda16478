"""Platform: the whole stack, wired from one typed StackConfig. Only wiring lives here."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.compute.cluster import Cluster, ClusterArgs
from components.compute.device_plugins import DevicePlugins, DevicePluginsArgs
from components.compute.gpu_pool import GpuPool, GpuPoolArgs
from components.compute.karpenter import Karpenter, KarpenterArgs
from components.config import StackConfig
from components.config.types import SYSTEM_POOL_NAME
from components.network.network import Network, NetworkArgs
from components.services.budgets import Budgets, BudgetsArgs
from components.services.hpo import Hpo, HpoArgs
from components.services.identity import ClusterAttachment
from components.services.k8s_names import POOL_LABEL
from components.services.kubeflow import Kubeflow, KubeflowArgs
from components.services.kueue import Kueue, KueueArgs, quota_plan
from components.services.monitoring import Monitoring, MonitoringArgs
from components.services.notebooks import JOB_OUTPUT_KEYS, Notebooks, NotebooksArgs
from components.services.registry import ImageRegistry, ImageRegistryArgs
from components.services.secrets import STORE as SECRET_STORE
from components.services.secrets import ExternalSecrets, ExternalSecretsArgs
from components.services.teams import Teams, TeamsArgs
from components.serving.serving import Serving, ServingArgs
from components.storage.storage import (
    Storage,
    StorageArgs,
    fsx_availability_zone,
    gpu_availability_zones,
)


class Platform(pulumi.ComponentResource):
    def __init__(self, name: str, config: StackConfig,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Platform", name, None, opts)
        self.config = config
        self._outputs: dict[str, Any] = {}
        child = pulumi.ResourceOptions(parent=self)

        self.network = Network(f"{name}-net", NetworkArgs(config.network, config.tags), child)
        self._outputs.update(
            vpcId=self.network.vpc_id,
            privateSubnetIds=self.network.private_subnet_ids,
            efaSecurityGroupId=self.network.efa_security_group_id,
        )
        # Later layers (cluster, GPU pools, storage, monitoring, Kubeflow, teams) are wired here.
        self._create_cluster(name)
        self._create_storage(name)
        self._create_supply_chain(name)
        self._create_monitoring(name)
        self._create_serving(name)
        self._create_kubeflow(name)
        self._create_kueue(name)
        self._create_budgets(name)
        self._create_notebooks(name)
        self._create_hpo(name)

        self.register_outputs(self._outputs)

    # -- cluster, GPU pools, device plugins, teams ---------------------------------------------
    def _create_cluster(self, name: str) -> None:
        config, net = self.config, self.network
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = Cluster(f"{name}-cluster", ClusterArgs(
            config=config.cluster, cluster_name=f"{name}-{config.stack}", vpc_id=net.vpc_id,
            subnet_ids=list(net.private_subnet_ids.values()), region=config.region,
            tags=config.tags), child)
        self.gpu_pools: dict[str, GpuPool] = {}  # managed pools; Karpenter's: _create_karpenter
        for pool in (p for p in config.gpu_pools if not p.karpenter):
            self.gpu_pools[pool.name] = GpuPool(f"{name}-pool-{pool.name}", GpuPoolArgs(
                config=pool, cluster_name=self.cluster.name,
                kubernetes_version=self.cluster.kubernetes_version,
                node_role_arn=self.cluster.node_role_arn,
                subnet_ids=[net.private_subnet_ids[az] for az in pool.availability_zones],
                cluster_security_group_id=self.cluster.cluster_security_group_id,
                efa_security_group_id=net.efa_security_group_id if pool.efa else None,
                tags=config.tags, depends_on=self.cluster.node_dependencies), child)
        # Kubernetes objects wait for the cluster, its add-ons and the system nodes only: a GPU
        # pool with no capacity (a p4d pool in a sold-out AZ, a Capacity Block not yet active)
        # must not hold back the whole platform. Teardown still deletes every Kubernetes object
        # before the cluster and the system nodes (docs/operations.md "Teardown order").
        self.k8s_dependencies = list(self.cluster.k8s_dependencies)
        self._create_karpenter(name)
        self.teams = Teams(f"{name}-teams", TeamsArgs(
            config.teams, self.cluster.k8s_provider, self.k8s_dependencies,
            gpu_pools=config.gpu_pools, gpu_ceilings=self._queue_ceilings()), child)
        self.device_plugins = DevicePlugins(f"{name}-device-plugins", DevicePluginsArgs(
            provider=self.cluster.k8s_provider, pools=config.gpu_pools,
            depends_on=self.k8s_dependencies), child)
        self._outputs.update(
            clusterName=self.cluster.name,
            clusterEndpoint=self.cluster.endpoint,
            gpuPools={p.name: {"nodeGroupName": self.gpu_pools[p.name].node_group.node_group_name
                               if not p.karpenter else None,
                               "nodePoolName": self.karpenter.node_pool_names[p.name]
                               if p.karpenter else None,
                               "provisioner": p.provisioner,
                               "instanceTypes": list(p.instance_types),
                               "capacityType": p.capacity_type,
                               "availabilityZones": list(p.availability_zones),
                               "efa": p.efa}
                      for p in config.gpu_pools},
        )

    # -- Karpenter: the controller, its identities, the interruption queue, NodePools ----------
    def _create_karpenter(self, name: str) -> None:
        config, net = self.config, self.network
        self.karpenter = None
        if not any(p.karpenter for p in config.gpu_pools):
            return
        self.karpenter = Karpenter(f"{name}-karpenter", KarpenterArgs(
            pools=config.gpu_pools, cluster_name=self.cluster.name,
            provider=self.cluster.k8s_provider, subnet_ids=net.private_subnet_ids,
            cluster_security_group_id=self.cluster.cluster_security_group_id,
            efa_security_group_id=net.efa_security_group_id, tags=config.tags,
            depends_on=self.k8s_dependencies), pulumi.ResourceOptions(parent=self))
        self._outputs.update(karpenterInterruptionQueue=self.karpenter.queue.name)

    # -- storage (S3, EFS, FSx, Pod Identity) -------------------------------------------------
    def _create_storage(self, name: str) -> None:
        config = self.config
        # Every node (system and GPU) carries the cluster SG; EFA nodes also the EFA SG.
        node_sgs = {"cluster": self.cluster.cluster_security_group_id,
                    "efa": self.network.efa_security_group_id}
        attachment = ClusterAttachment(
            cluster_name=self.cluster.name, provider=self.cluster.k8s_provider,
            namespaces=dict(self.teams.namespaces), depends_on=list(self.k8s_dependencies))
        self.storage = Storage(f"{name}-storage", StorageArgs(
            config=config.storage, vpc_id=self.network.vpc_id,
            private_subnet_ids=self.network.private_subnet_ids,
            gpu_azs=gpu_availability_zones(config), efa_az=fsx_availability_zone(config),
            node_security_group_ids=node_sgs, cluster=attachment, tags=config.tags),
            pulumi.ResourceOptions(parent=self))
        self._outputs.update(self.storage.stack_outputs())

    # -- image registry (ECR) and secrets (Secrets Manager + External Secrets Operator) ---------
    def _create_supply_chain(self, name: str) -> None:
        config, child = self.config, pulumi.ResourceOptions(parent=self)
        key = self.storage.key.arn
        self.registry = None
        if config.registry.enabled:
            self.registry = ImageRegistry(f"{name}-registry", ImageRegistryArgs(
                config=config.registry, key_arn=key,
                retain_on_delete=config.storage.retain_on_delete, tags=config.tags), child)
            self._outputs.update(imageRepositories=dict(self.registry.repository_urls))
        self.secrets = None
        if config.secrets.enabled:
            consumers, external = ["monitoring"], []
            auth = config.notebooks.auth if config.notebooks.enabled else None
            if auth is not None and auth.kind != "dummy":  # the hub's OAuth client secret
                consumers.append("notebooks")
                external.append(auth.client_secret_name)
            self.secrets = ExternalSecrets(f"{name}-secrets", ExternalSecretsArgs(
                config=config.secrets, provider=self.cluster.k8s_provider,
                cluster_name=self.cluster.name, region=config.region, key_arn=key,
                consumers=consumers, external_names=external,
                depends_on=self.k8s_dependencies, tags=config.tags), child)
            self._outputs.update(secretStore=self.secrets.store.metadata["name"],
                                 grafanaAdminSecretArn=self.secrets.grafana_admin.arn)

    # -- monitoring (kube-prometheus-stack, DCGM, dashboards, alerts) ---------------------------
    def _create_monitoring(self, name: str) -> None:
        config = self.config
        self.monitoring = None
        if not config.monitoring.enabled:
            return
        self.monitoring = Monitoring(f"{name}-monitoring", MonitoringArgs(
            config=config.monitoring, provider=self.cluster.k8s_provider,
            gpu_pools=config.gpu_pools, depends_on=self.k8s_dependencies,
            retain_volumes=config.storage.retain_on_delete,
            grafana_admin_from=self.secrets.grafana_source() if self.secrets else None),
            pulumi.ResourceOptions(parent=self))
        if self.monitoring.grafana_admin_password is not None:
            self._outputs.update(grafanaAdminPassword=self.monitoring.grafana_admin_password)
        self._outputs.update(monitoringNamespace=self.monitoring.namespace.metadata.name)

    # -- serving: KServe, KEDA, cert-manager, the ALB controller, the served models -------------
    def _create_serving(self, name: str) -> None:
        from components.config.serving import MODELS_PREFIX
        from components.network import netmath

        config, net = self.config, self.network
        self.serving = None
        if not config.serving.enabled:
            return
        plan = netmath.carve_subnets(config.network.vpc_cidr, config.network.availability_zones,
                                     config.network.private_subnet_prefix,
                                     config.network.public_subnet_prefix)
        self.serving = Serving(f"{name}-serving", ServingArgs(
            config=config.serving, provider=self.cluster.k8s_provider,
            cluster_name=self.cluster.name, region=config.region, vpc_id=net.vpc_id,
            vpc_cidr=config.network.vpc_cidr,
            lb_subnet_ids=[net.public_subnet_ids[az] for az in config.network.availability_zones],
            lb_subnet_cidrs=[plan.public[az] for az in config.network.availability_zones],
            bucket=self.storage.buckets.checkpoints.bucket,
            bucket_arn=self.storage.buckets.checkpoints.arn, key_arn=self.storage.key.arn,
            tags=config.tags,
            depends_on=[*self.k8s_dependencies,
                        *([self.monitoring.kube_prometheus_stack] if self.monitoring else [])],
            monitoring_enabled=self.monitoring is not None), pulumi.ResourceOptions(parent=self))
        self._outputs.update(servingNamespace=config.serving.namespace,
                             modelsPrefix=MODELS_PREFIX,
                             servingHosts=self.serving.models.hosts)

    # -- Kubeflow Trainer v2 and the per-pool training runtimes ---------------------------------
    def _create_kubeflow(self, name: str) -> None:
        config = self.config
        self.kubeflow = None
        if not config.kubeflow.enabled:
            return
        self.kubeflow = Kubeflow(f"{name}-kubeflow", KubeflowArgs(
            config=config.kubeflow, provider=self.cluster.k8s_provider,
            gpu_pools=config.gpu_pools, depends_on=self.k8s_dependencies),
            pulumi.ResourceOptions(parent=self))
        self._outputs.update(trainingRuntimes=dict(self.kubeflow.runtime_names))

    # -- Kueue: flavors per pool, a ClusterQueue per team, a LocalQueue per team namespace -------
    def _kueue_enabled(self) -> bool:
        # Kueue queues TrainJobs (and JobSets): their CRDs come with the Kubeflow Trainer.
        return self.config.kubeflow.enabled

    def _queue_ceilings(self) -> dict[str, dict[str, int]]:
        """What each team's ClusterQueue can admit: its ResourceQuota must not be lower."""
        if not self._kueue_enabled():
            return {}
        return quota_plan(self.config.teams, self.config.gpu_pools).ceilings()

    def _create_notebooks(self, name: str) -> None:
        config = self.config
        self.notebooks = None
        if not config.notebooks.enabled:
            return
        self.notebooks = Notebooks(f"{name}-notebooks", NotebooksArgs(
            config=config.notebooks, team_namespaces=dict(self.teams.namespaces),
            pools={p.name: p for p in config.gpu_pools}, cluster_name=self.cluster.name,
            training_role_arn=self.storage.identity.role_arn,
            provider=self.cluster.k8s_provider, depends_on=self.k8s_dependencies,
            system_selector={POOL_LABEL: SYSTEM_POOL_NAME},
            secret_store=SECRET_STORE if self.secrets is not None else None,
            stack_outputs=pulumi.Output.json_dumps(
                {k: v for k, v in self._outputs.items() if k in JOB_OUTPUT_KEYS}),
            tags=config.tags), pulumi.ResourceOptions(parent=self))
        self._outputs.update(notebooksNamespace="notebooks")

    def _create_hpo(self, name: str) -> None:
        if not self.config.hpo.enabled:
            return
        self.hpo = Hpo(f"{name}-hpo", HpoArgs(
            team_namespaces=dict(self.teams.namespaces), provider=self.cluster.k8s_provider,
            depends_on=self.k8s_dependencies), pulumi.ResourceOptions(parent=self))
        self._outputs.update(hpoServiceAccount="hpo")

    def _create_budgets(self, name: str) -> None:
        if not self.config.budgets.enabled:
            return
        self.budgets = Budgets(f"{name}-budgets", BudgetsArgs(
            stack=self.config.stack, config=self.config.budgets, tags=self.config.tags),
            pulumi.ResourceOptions(parent=self))

    def _create_kueue(self, name: str) -> None:
        config = self.config
        self.kueue = None
        if not self._kueue_enabled():
            return
        self.kueue = Kueue(f"{name}-kueue", KueueArgs(
            provider=self.cluster.k8s_provider, teams=config.teams, gpu_pools=config.gpu_pools,
            team_namespaces=dict(self.teams.namespaces), depends_on=self.k8s_dependencies,
            integrations=[self.kubeflow.trainer] if self.kubeflow else []),
            pulumi.ResourceOptions(parent=self))
        self._outputs.update(localQueue=self.kueue.local_queue,
                             clusterQueues=dict(self.kueue.cluster_queue_names))

    def stack_outputs(self) -> dict[str, Any]:
        return dict(self._outputs)
