"""Platform: the whole stack, wired from one typed StackConfig. Only wiring lives here."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.compute.cluster import Cluster, ClusterArgs
from components.compute.device_plugins import DevicePlugins, DevicePluginsArgs
from components.compute.gpu_pool import GpuPool, GpuPoolArgs
from components.compute.karpenter import Karpenter, KarpenterArgs
from components.config import StackConfig
from components.network.network import Network, NetworkArgs
from components.services.identity import ClusterAttachment
from components.services.kubeflow import Kubeflow, KubeflowArgs
from components.services.kueue import Kueue, KueueArgs, quota_plan
from components.services.monitoring import Monitoring, MonitoringArgs
from components.services.teams import Teams, TeamsArgs
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
        self._create_monitoring(name)
        self._create_kubeflow(name)
        self._create_kueue(name)

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

    # -- monitoring (kube-prometheus-stack, DCGM, dashboards, alerts) ---------------------------
    def _create_monitoring(self, name: str) -> None:
        config = self.config
        self.monitoring = None
        if not config.monitoring.enabled:
            return
        self.monitoring = Monitoring(f"{name}-monitoring", MonitoringArgs(
            config=config.monitoring, provider=self.cluster.k8s_provider,
            gpu_pools=config.gpu_pools, depends_on=self.k8s_dependencies,
            retain_volumes=config.storage.retain_on_delete), pulumi.ResourceOptions(parent=self))
        self._outputs.update(grafanaAdminPassword=self.monitoring.grafana_admin_password,
                             monitoringNamespace=self.monitoring.namespace.metadata.name)

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
