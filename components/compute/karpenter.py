"""Karpenter: elastic GPU capacity for the pools whose `provisioner` is `karpenter`.

One controller (the upstream chart, pinned in components/data/charts.yaml) on the system nodes,
and per elastic pool a NodePool + EC2NodeClass built from the same GpuPoolConfig as a managed
node group, with the SAME node labels and GPU taint (components/compute/gpu_pool.py node_labels /
node_taints): device plugins, DCGM, runtimes, Kueue flavors and policies cannot tell which
provisioner made a node. Reserved pools (ODCR, Capacity Block) and the system pool stay managed
node groups (components/config/pools.py refuses `karpenter` on a reserved pool).

What the controller needs, all created here:

- **Node identity**: its own node role (the managed node groups' policies) with an instance
  profile and an EKS access entry of type EC2_LINUX. Not the cluster's node role: EKS already
  puts that role in an access entry for the managed node groups, and a principal can be in only
  one access entry (a second one fails the deploy).
- **Controller identity**: an EKS Pod Identity role for the chart's service account, trusted
  only by this account's and this cluster's Pod Identity agent, with least privilege scoped to
  the cluster (controller_policy): EC2 launches and deletes only on resources tagged for the
  cluster and a NodePool, iam:PassRole of the node role only, the one instance profile, the EKS
  AMI SSM parameters, the one queue, eks:DescribeCluster on the one cluster. The instance
  profile is ours, so the controller needs no rights to create or delete instance profiles.
- **Interruption queue**: SQS (SSE-SQS) fed by EventBridge rules for Spot interruption warnings,
  rebalance recommendations, AWS Health scheduled changes and instance state changes; the queue
  policy lets only EventBridge (from these rules) and SQS send to it. The queue is auto-named:
  the chart takes its name (`settings.interruptionQueue`) as a value, which Pulumi fills in.

NodePools never consolidate a node running training: `WhenEmpty` after CONSOLIDATE_AFTER, nodes
never expire (expiry is forceful in Karpenter v1), and drift (a new AMI) replaces one node at a
time and waits for pods marked `karpenter.sh/do-not-disrupt` (the job side sets it on training
pods). Spot pools ask for `spot` only over every type of the pool (Karpenter's Spot allocation is
price-capacity-optimized); `limits` stop a pool at its configured maximum.

Field names and shapes are those of the pinned version's CRDs (tests/components/data/crds/).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_context import aws_context
from components.compute.addons import chart
from components.compute.catalog import Catalog, InstanceType, load_catalog
from components.compute.cluster import NODE_POLICIES, trust_policy
from components.compute.gpu_pool import node_labels, node_taints, pool_specs, root_device_name
from components.compute.userdata import has_local_nvme, is_bottlerocket
from components.config import SYSTEM_POOL_NAME, GpuPoolConfig
from components.network.efa import efa_interfaces
from components.network.netmath import MAX_PODS_PER_NODE
from components.services.identity import cluster_arn, pod_identity_trust_policy
from components.services.k8s_names import GPU_RESOURCE, POOL_LABEL
from components.services.monitoring import release_chart

KARPENTER_CHART = "karpenter"
NAMESPACE = "kube-system"
"""Where the controller runs (Karpenter's documented default)."""
SERVICE_ACCOUNT = "karpenter"
NODEPOOL_API = "karpenter.sh/v1"
NODECLASS_API = "karpenter.k8s.aws/v1"
NODECLASS_GROUP = "karpenter.k8s.aws"
CONSOLIDATE_AFTER = "5m"
"""How long a node must be empty before Karpenter removes it: long enough for the next job of a
queue (or a restarted TrainJob) to land on it, short enough that an idle 8-GPU node costs
minutes, not hours."""
EXPIRE_AFTER = "Never"
"""Expiry is forceful in Karpenter v1 (it ignores do-not-disrupt): never expire GPU nodes; new
AMIs arrive through drift, which waits for training pods."""
DISRUPTION_BUDGETS = ({"nodes": "100%", "reasons": ["Empty"]},
                      {"nodes": "1", "reasons": ["Drifted"]})
"""Empty nodes go at once; drifted nodes (new AMI, changed EC2NodeClass) one at a time."""
AMI_ALIAS = "al2023@latest"
"""EKS-optimized AL2023: Karpenter picks the NVIDIA (or Neuron) variant for accelerated instance
types itself. `latest` follows the cluster's Kubernetes version and AWS's AMI releases; the new
AMI rolls in through drift, one node at a time and never under a training pod, the way a
managed node group needs an explicit release update. Pinning (`al2023@vYYYYMMDD`) stops that."""
QUEUE_RETENTION_SECONDS = 300
"""Interruption messages are useless after the 2-minute notice: keep them 5 minutes."""
INTERRUPTION_EVENTS = {
    # rule suffix: (EventBridge source, detail-type)
    "spot-interruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "scheduled-change": ("aws.health", "AWS Health Event"),
    "state-change": ("aws.ec2", "EC2 Instance State-change Notification"),
}
CAPACITY_TYPES = {"SPOT": "spot", "ON_DEMAND": "on-demand"}
"""Pool capacityType -> karpenter.sh/capacity-type (reserved pools are never Karpenter's)."""
CONTROLLER_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"memory": "1Gi"}}
"""A handful of NodePools: well under the 1 CPU / 1 GiB the getting-started guide sizes for
large clusters, and small enough for dev's two m6i.large system nodes."""


@dataclass(frozen=True)
class KarpenterArgs:
    pools: Sequence[GpuPoolConfig]
    """The stack's GPU pools; only those with provisioner `karpenter` get a NodePool (required)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster name (required)."""
    provider: k8s.Provider
    """Kubernetes provider of the cluster (required)."""
    subnet_ids: Mapping[str, pulumi.Input[str]]
    """AZ -> private subnet id; each pool launches into the subnets of its AZs (required)."""
    cluster_security_group_id: pulumi.Input[str]
    """The EKS-created cluster security group, on every node (required)."""
    efa_security_group_id: Optional[pulumi.Input[str]] = None
    """The network's EFA security group; required when a Karpenter pool has EFA."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on the AWS resources and on what Karpenter launches. Default none."""
    depends_on: Sequence[pulumi.Resource] = ()
    """What every Kubernetes object waits for (Platform.k8s_dependencies). Default none."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def karpenter_pools(pools: Sequence[GpuPoolConfig]) -> list[GpuPoolConfig]:
    return [p for p in pools if p.karpenter]


def validate_karpenter_pool(config: GpuPoolConfig) -> list[str]:
    """Problems with building `config` as a NodePool (config parsing refuses these already;
    this guards the component when it is built directly)."""
    problems = []
    if config.reserved or config.capacity_type not in CAPACITY_TYPES:
        problems.append(f"{config.name}: reserved pools ({config.capacity_type}) stay managed "
                        "node groups")
    if config.min_size or config.desired_size:
        problems.append(f"{config.name}: a Karpenter pool has no standing size (minSize and "
                        "desiredSize must be 0)")
    if config.efa and config.efa_layout != "current":
        problems.append(f"{config.name}: an EC2NodeClass cannot build the {config.efa_layout!r} "
                        "EFA layout")
    if is_bottlerocket(config.ami_type):
        problems.append(f"{config.name}: Karpenter pools use the AL2023 AMIs")
    return problems


def resource_name(config: GpuPoolConfig) -> str:
    """Name of the pool's NodePool and EC2NodeClass: the pool's name (cluster-scoped objects,
    one per pool; config names are DNS labels)."""
    return config.name


def requirements(config: GpuPoolConfig) -> list[dict]:
    """What a node of the pool may be: exactly the pool's instance types, its market, its AZs.
    Several Spot types let Karpenter diversify (price-capacity-optimized)."""
    return [
        {"key": "node.kubernetes.io/instance-type", "operator": "In",
         "values": sorted(config.instance_types)},
        {"key": "karpenter.sh/capacity-type", "operator": "In",
         "values": [CAPACITY_TYPES[config.capacity_type]]},
        {"key": "topology.kubernetes.io/zone", "operator": "In",
         "values": list(config.availability_zones)},
    ]


def limits(config: GpuPoolConfig, specs: Sequence[InstanceType]) -> dict[str, str]:
    """The pool's maximum as resource limits: Karpenter launches no node that would take the
    pool past max nodes x accelerators (and x vCPUs of its widest type). trainyard/plan.py
    reads max nodes back from them (max_nodes_from_limits)."""
    vendor = specs[0].vendor or "nvidia"
    return {GPU_RESOURCE[vendor]: str(config.max_size * max(s.gpus for s in specs)),
            "cpu": str(config.max_size * max(s.vcpus for s in specs))}


def taints(vendor: str) -> list[dict]:
    """gpu_pool.node_taints in the Kubernetes spelling a NodePool takes (NoSchedule)."""
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute",
               "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    return [{"key": t["key"], "value": t["value"], "effect": effects[t["effect"]]}
            for t in node_taints(vendor)]


def nodepool_spec(config: GpuPoolConfig, specs: Sequence[InstanceType]) -> dict:
    """The NodePool's spec (karpenter.sh/v1)."""
    vendor = specs[0].vendor or "nvidia"
    return {
        "template": {
            "metadata": {"labels": node_labels(config, specs)},
            "spec": {
                "nodeClassRef": {"group": NODECLASS_GROUP, "kind": "EC2NodeClass",
                                 "name": resource_name(config)},
                "requirements": requirements(config),
                "taints": taints(vendor),
                "expireAfter": EXPIRE_AFTER,
            },
        },
        "disruption": {"consolidationPolicy": "WhenEmpty",
                       "consolidateAfter": CONSOLIDATE_AFTER,
                       "budgets": [dict(b) for b in DISRUPTION_BUDGETS]},
        "limits": limits(config, specs),
    }


def network_interfaces(specs: Sequence[InstanceType]) -> list[dict]:
    """Every EFA interface the pool's types have, in the form an EC2NodeClass takes.

    Karpenter's API knows `interface` and `efa-only` only (no `efa`), and the primary (card 0,
    device 0) must be `interface`: so card 0 carries its EFA device as an `efa-only` interface at
    device index 1, and every other card an `efa-only` at device index 0 (AWS_FACTS "current
    guidance"). Same EFA count and the same single IP-bearing interface as efa.py's `current`
    layout, so netmath's IP budget holds."""
    counts = {len(efa_interfaces(s, "current")) for s in specs}
    if len(counts) != 1:
        raise ValueError(f"instance types {', '.join(s.name for s in specs)} have different "
                         "EFA interface counts")
    count = counts.pop()
    nics = [{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"},
            {"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only"}]
    nics += [{"networkCardIndex": card, "deviceIndex": 0, "interfaceType": "efa-only"}
             for card in range(1, count)]
    return nics


def block_device(config: GpuPoolConfig) -> dict:
    """The encrypted gp3 root volume of the pool's size (gpu_pool.root_volume's twin)."""
    return {"deviceName": root_device_name(config.ami_type),
            "ebs": {"volumeSize": f"{config.root_volume_gib}Gi", "volumeType": "gp3",
                    "encrypted": True, "deleteOnTermination": True}}


def metadata_options(hop_limit: int) -> dict:
    """IMDSv2 only, with the pool's hop limit (cluster.metadata_options' twin)."""
    return {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": hop_limit, "httpTokens": "required"}


def nodeclass_spec(config: GpuPoolConfig, specs: Sequence[InstanceType], instance_profile: Any,
                   subnet_ids: Sequence[Any], security_group_ids: Sequence[Any],
                   placement_group: Any = None, tags: Optional[Mapping[str, str]] = None) -> dict:
    """The EC2NodeClass's spec (karpenter.k8s.aws/v1). Ids and names may be Pulumi inputs."""
    spec: dict = {
        "amiSelectorTerms": [{"alias": AMI_ALIAS}],
        "instanceProfile": instance_profile,
        "subnetSelectorTerms": [{"id": s} for s in subnet_ids],
        "securityGroupSelectorTerms": [{"id": g} for g in security_group_ids],
        "metadataOptions": metadata_options(config.http_put_response_hop_limit),
        "blockDeviceMappings": [block_device(config)],
        # What nodeadm gives managed GPU nodes: the same allocatable memory (kube-reserved grows
        # with max pods) and the pods-per-node netmath sizes the subnets for. Karpenter's own
        # default (ENI-limited pod density) reaches 737 on the largest types.
        "kubelet": {"maxPods": MAX_PODS_PER_NODE},
        "tags": {**(tags or {}), POOL_LABEL: config.name},
    }
    if has_local_nvme(specs):
        spec["instanceStorePolicy"] = "RAID0"  # containerd/kubelet on the striped NVMe
    if config.efa:
        spec["networkInterfaces"] = network_interfaces(specs)
    if placement_group is not None:
        spec["placementGroupSelector"] = {"name": placement_group}
    return spec


def controller_values(cluster_name: Any, queue_name: Any) -> dict:
    """Helm values of the controller: on the system nodes, this cluster, this queue."""
    return {
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "serviceAccount": {"name": SERVICE_ACCOUNT},
        "nodeSelector": {POOL_LABEL: SYSTEM_POOL_NAME},
        "controller": {"resources": json.loads(json.dumps(CONTROLLER_RESOURCES))},
    }


def event_pattern(source: str, detail_type: str) -> str:
    return json.dumps({"source": [source], "detail-type": [detail_type]}, sort_keys=True)


def queue_policy(queue_arn: str, rule_arns: Sequence[str]) -> str:
    """Only EventBridge (from our rules) and SQS may send to the queue; nothing over plain HTTP."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "EventBridgeRules", "Effect": "Allow",
         "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
         "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": sorted(rule_arns)}}},
        {"Sid": "SqsService", "Effect": "Allow", "Principal": {"Service": "sqs.amazonaws.com"},
         "Action": "sqs:SendMessage", "Resource": queue_arn},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
         "Resource": queue_arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}, sort_keys=True)


def controller_policy(partition: str, region: str, account_id: str, cluster_name: str,
                      node_role_arn: str, instance_profile_arn: str, queue_arn: str) -> str:
    """Least privilege for the controller, scoped to one cluster (Karpenter's documented
    controller policy, minus instance-profile management: the profile is ours)."""
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    tagged_pool = {"aws:ResourceTag/karpenter.sh/nodepool": "*"}
    request_tags = {f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name}
    request_pool = {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    launched = [f"{ec2}:*:{t}/*" for t in ("fleet", "instance", "volume", "network-interface",
                                            "launch-template", "spot-instances-request")]
    statements = [
        {"Sid": "LaunchFromSharedResources", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*",
                      f"{ec2}:*:subnet/*", f"{ec2}:*:capacity-reservation/*",
                      f"{ec2}:*:placement-group/*"]},
        {"Sid": "LaunchFromOwnLaunchTemplates", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
         "Resource": f"{ec2}:*:launch-template/*",
         "Condition": {"StringEquals": owned, "StringLike": tagged_pool}},
        {"Sid": "CreateTaggedForCluster", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
         "Resource": launched,
         "Condition": {"StringEquals": request_tags, "StringLike": request_pool}},
        {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "ec2:CreateTags", "Resource": launched,
         "Condition": {"StringEquals": {**request_tags, "ec2:CreateAction": [
             "RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
             "StringLike": request_pool}},
        {"Sid": "TagOwnInstances", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": owned, "StringLike": tagged_pool,
                       "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name":
                                                cluster_name},
                       "ForAllValues:StringEquals": {"aws:TagKeys": [
                           "eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]}}},
        {"Sid": "DeleteOwn", "Effect": "Allow",
         "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
         "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
         "Condition": {"StringEquals": owned, "StringLike": tagged_pool}},
        {"Sid": "PassNodeRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": node_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
        {"Sid": "ReadNodeInstanceProfile", "Effect": "Allow", "Action": "iam:GetInstanceProfile",
         "Resource": instance_profile_arn},
        # Karpenter's garbage collection lists instance profiles (it deletes only its own,
        # which it cannot here); listing takes no resource scope.
        {"Sid": "ListInstanceProfiles", "Effect": "Allow", "Action": "iam:ListInstanceProfiles",
         "Resource": "*"},
        {"Sid": "DescribeCluster", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": cluster_arn(partition, region, account_id, cluster_name)},
        {"Sid": "InterruptionQueue", "Effect": "Allow",
         "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
         "Resource": queue_arn},
        {"Sid": "RegionalReads", "Effect": "Allow",
         "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages",
                    "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups",
                    "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets"],
         "Resource": "*", "Condition": {"StringEquals": {"aws:RequestedRegion": region}}},
        {"Sid": "EksAmiParameters", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/eks/optimized-ami/*"},
        {"Sid": "Pricing", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class Karpenter(pulumi.ComponentResource):
    release: k8s.helm.v3.Release
    queue: aws.sqs.Queue
    node_role: aws.iam.Role
    controller_role: aws.iam.Role
    node_pools: dict[str, k8s.apiextensions.CustomResource]
    node_classes: dict[str, k8s.apiextensions.CustomResource]
    placement_groups: dict[str, aws.ec2.PlacementGroup]

    def __init__(self, name: str, args: KarpenterArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Karpenter", name, None, opts)
        self._name, self._args = name, args
        self._catalog = args.catalog or load_catalog()
        self.pools = karpenter_pools(args.pools)
        problems = [p for pool in self.pools for p in validate_karpenter_pool(pool)]
        if any(p.efa for p in self.pools) and args.efa_security_group_id is None:
            problems.append("efa_security_group_id: required for EFA pools")
        if problems:
            raise ValueError(f"Karpenter {name}: " + "; ".join(problems))
        self._child = pulumi.ResourceOptions(parent=self)
        self._account, self._region, self._partition = aws_context(self)

        self._create_node_identity()
        self._create_interruption_queue()
        self._create_controller_identity()
        self._create_release()
        self._create_pools()
        self.register_outputs({
            "interruptionQueue": self.queue.name,
            "controllerRoleArn": self.controller_role.arn,
            "nodeRoleArn": self.node_role.arn,
            "nodePools": dict(self.node_pool_names),
        })

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    # -- nodes: role, instance profile, access entry -------------------------------------------
    def _create_node_identity(self) -> None:
        n = f"{self._name}-node"
        self.node_role = aws.iam.Role(
            n, assume_role_policy=trust_policy("ec2.amazonaws.com"),
            description="Nodes Karpenter launches (elastic GPU pools)",
            tags=self._tags(n), opts=self._child)
        for policy in NODE_POLICIES:
            aws.iam.RolePolicyAttachment(
                f"{n}-{policy}", role=self.node_role.name,
                policy_arn=self._partition.apply(lambda p, pol=policy:
                                                 f"arn:{p}:iam::aws:policy/{pol}"),
                opts=self._child)
        self.instance_profile = aws.iam.InstanceProfile(
            n, role=self.node_role.name, tags=self._tags(n), opts=self._child)
        # Nodes join through this entry; EC2_LINUX entries take no access policy.
        self.access_entry = aws.eks.AccessEntry(
            n, cluster_name=self._args.cluster_name, principal_arn=self.node_role.arn,
            type="EC2_LINUX", tags=self._tags(n),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self._args.depends_on)))

    # -- interruption queue -------------------------------------------------------------------
    def _create_interruption_queue(self) -> None:
        n = f"{self._name}-interruption"
        self.queue = aws.sqs.Queue(
            n, message_retention_seconds=QUEUE_RETENTION_SECONDS, sqs_managed_sse_enabled=True,
            tags=self._tags(n), opts=self._child)
        self.rules: dict[str, aws.cloudwatch.EventRule] = {}
        for key, (source, detail) in INTERRUPTION_EVENTS.items():
            rn = f"{n}-{key}"
            self.rules[key] = aws.cloudwatch.EventRule(
                rn, description=f"{detail} -> Karpenter's interruption queue",
                event_pattern=event_pattern(source, detail), tags=self._tags(rn),
                opts=self._child)
            aws.cloudwatch.EventTarget(rn, rule=self.rules[key].name, arn=self.queue.arn,
                                       opts=self._child)
        self.queue_policy = aws.sqs.QueuePolicy(
            n, queue_url=self.queue.id,
            policy=pulumi.Output.all(self.queue.arn, *(r.arn for r in self.rules.values()))
            .apply(lambda v: queue_policy(v[0], v[1:])), opts=self._child)

    # -- controller: Pod Identity role --------------------------------------------------------
    def _create_controller_identity(self) -> None:
        n, a = f"{self._name}-controller", self._args
        source = pulumi.Output.all(self._partition, self._region, self._account,
                                   a.cluster_name).apply(lambda v: cluster_arn(*v))
        self.controller_role = aws.iam.Role(
            n, description="Karpenter controller (EKS Pod Identity)",
            assume_role_policy=pulumi.Output.all(self._account, source)
            .apply(lambda v: pod_identity_trust_policy(*v)),
            tags=self._tags(n), opts=self._child)
        self.controller_policy = aws.iam.RolePolicy(
            n, role=self.controller_role.id,
            policy=pulumi.Output.all(self._partition, self._region, self._account,
                                     a.cluster_name, self.node_role.arn,
                                     self.instance_profile.arn, self.queue.arn)
            .apply(lambda v: controller_policy(*v)), opts=self._child)
        self.association = aws.eks.PodIdentityAssociation(
            n, cluster_name=a.cluster_name, namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
            role_arn=self.controller_role.arn, tags=self._tags(n),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(a.depends_on)))

    # -- the chart ----------------------------------------------------------------------------
    def _create_release(self) -> None:
        a = self._args
        pin = chart(KARPENTER_CHART)
        chart_ref, repo = release_chart(pin)
        self.chart_version = pin.version
        self.release = k8s.helm.v3.Release(
            f"{self._name}-controller",
            # Fixed: one controller per cluster; its webhook service and leases use the name.
            name=pin.chart, chart=chart_ref, version=pin.version, repository_opts=repo,
            namespace=NAMESPACE, values=controller_values(a.cluster_name, self.queue.name),
            max_history=5, timeout=600, atomic=True, cleanup_on_fail=True,
            opts=pulumi.ResourceOptions(
                parent=self, provider=a.provider,
                # Credentials (the association and its policy) before the controller starts.
                depends_on=[*a.depends_on, self.association, self.controller_policy,
                            self.queue_policy]))

    # -- one NodePool + EC2NodeClass per pool -------------------------------------------------
    def _create_pools(self) -> None:
        a = self._args
        self.node_pools, self.node_classes, self.placement_groups = {}, {}, {}
        self.node_pool_names: dict[str, str] = {}
        for pool in self.pools:
            specs = pool_specs(pool, self._catalog)
            n = f"{self._name}-{pool.name}"
            pg = None
            if pool.placement_group:
                pg = aws.ec2.PlacementGroup(f"{n}-pg", strategy="cluster",
                                            tags={**self._tags(f"{n}-pg"), POOL_LABEL: pool.name},
                                            opts=self._child)
                self.placement_groups[pool.name] = pg
            sgs = [a.cluster_security_group_id]
            if pool.efa:
                sgs.append(a.efa_security_group_id)
            spec = nodeclass_spec(
                pool, specs, self.instance_profile.name,
                [a.subnet_ids[az] for az in pool.availability_zones], sgs,
                pg.name if pg is not None else None, a.tags)
            opts = pulumi.ResourceOptions(parent=self, provider=a.provider,
                                          depends_on=[*a.depends_on, self.release])
            labels = {POOL_LABEL: pool.name}
            self.node_classes[pool.name] = k8s.apiextensions.CustomResource(
                f"{n}-nodeclass", api_version=NODECLASS_API, kind="EC2NodeClass",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=resource_name(pool), labels=labels),
                spec=spec, opts=opts)
            self.node_pools[pool.name] = k8s.apiextensions.CustomResource(
                f"{n}-nodepool", api_version=NODEPOOL_API, kind="NodePool",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=resource_name(pool), labels=labels),
                spec=nodepool_spec(pool, specs),
                opts=pulumi.ResourceOptions(parent=self, provider=a.provider, depends_on=[
                    *a.depends_on, self.release, self.node_classes[pool.name]]))
            self.node_pool_names[pool.name] = resource_name(pool)
