"""GpuPool: one EKS managed node group and its launch template for a pool of GPU nodes.

Every decision is a pure function below (labels, taints, NIC layout, capacity options, repair
policy, validation); the class only turns them into resources.

EFA pools: every interface the instance type supports (components/network/efa.py), security groups on
the interfaces (cluster SG + EFA SG), exactly one subnet, and a `cluster` placement group unless
the pool launches into a reservation. The subnet goes to the node group, never the launch
template (EKS rejects that). Reserved capacity: ODCR = `capacityReservationSpecification` only;
Capacity Block = that plus `instanceMarketOptions.marketType=capacity-block` and node group
capacity type CAPACITY_BLOCK.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.compute.catalog import Catalog, InstanceType, load_catalog
from components.compute.cluster import (
    metadata_options,
    repair_thresholds,
    root_volume,
    tag_specifications,
)
from components.compute.userdata import encoded_user_data, is_bottlerocket
from components.config import AMI_TYPES, CAPACITY_TYPES, GpuPoolConfig
from components.network.efa import LAYOUTS, Nic, pool_interfaces
from components.services.k8s_names import (
    ACCELERATOR_LABEL,
    EFA_LABEL,
    GPU_MODEL_LABEL,
    GPU_TAINT_KEY,
    POOL_LABEL,
    PURPOSE_LABEL,
)

CAPACITY_TYPE_LABEL = "trainyard.io/capacity-type"
"""Node label: ON_DEMAND, SPOT or CAPACITY_BLOCK (mirrors EKS's eks.amazonaws.com/capacityType,
which EKS sets itself, so selectors need not rely on an AWS-owned key)."""
AMI_FAMILY_LABEL = "trainyard.io/ami-family"
"""Node label: `al2023` or `bottlerocket`. Bottlerocket NVIDIA AMIs run their own NVIDIA device
plugin, so the Helm-installed one stays off those nodes."""
ACCELERATED_CONDITION = "AcceleratedHardwareReady"
REPAIR_OVERRIDES = {
    # vendor -> (node unhealthy reason, repair action, minutes to wait first). Hardware that is
    # gone is replaced quickly (idle reserved GPUs cost money); errors a GPU reset clears get a
    # reboot. Everything else keeps EKS's default (repair after 10 minutes).
    "nvidia": (
        ("NvidiaXID79Error", "Replace", 5),   # GPU has fallen off the bus
        ("NvidiaXID64Error", "Replace", 5),   # row-remapping failure: the memory is bad
        ("NvidiaXID48Error", "Reboot", 10),   # double-bit ECC error: a reset remaps the row
        ("NvidiaXID74Error", "Reboot", 10),   # NVLink error
        ("NvidiaXID95Error", "Reboot", 10),   # uncontained ECC error
    ),
}


@dataclass(frozen=True)
class GpuPoolArgs:
    config: GpuPoolConfig
    """The typed pool entry of `trainyard:gpuPools` (required)."""
    cluster_name: pulumi.Input[str]
    """EKS cluster the node group joins (required)."""
    kubernetes_version: str
    """Kubelet version of the nodes; the cluster's version (required)."""
    node_role_arn: pulumi.Input[str]
    """Node IAM role (required); the cluster's minimal node role."""
    subnet_ids: Sequence[pulumi.Input[str]]
    """One private subnet per entry of config.availability_zones, same order (required)."""
    cluster_security_group_id: pulumi.Input[str]
    """The EKS-created cluster security group (required): a launch template that names security
    groups replaces EKS's default, so it must be listed explicitly."""
    efa_security_group_id: Optional[pulumi.Input[str]] = None
    """The network's EFA security group; required for EFA pools. Default None."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on the pool's resources and on what it launches. Default none."""
    depends_on: Sequence[pulumi.Resource] = ()
    """What the node group waits for (the cluster's CNI add-ons). Default none."""
    catalog: Optional[Catalog] = None
    """Instance catalog. Default: components/data/instances.yaml."""
    now: Optional[dt.datetime] = None
    """The time of the plan (UTC), for Capacity Blocks that start later. Default: now."""


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def validate_gpu_pool(args: GpuPoolArgs, catalog: Optional[Catalog] = None) -> list[str]:
    """Every problem with `args`, each as `<field path>: <message>`. Config parsing already
    rejects bad stack files; this guards the component when it is built directly."""
    catalog = catalog or args.catalog or load_catalog()
    c, problems = args.config, []

    def bad(path: str, message: str) -> None:
        problems.append(f"config.{path}: {message}" if path else message)

    specs = []
    for i, t in enumerate(c.instance_types):
        if not catalog.knows(t):
            bad(f"instanceTypes[{i}]", f"{t!r} is not a known instance type")
            continue
        specs.append(catalog.get(t))
        if not specs[-1].is_accelerated:
            bad(f"instanceTypes[{i}]", f"{t!r} has no GPU or accelerator")
        if c.efa and not specs[-1].efa:
            bad(f"instanceTypes[{i}]", f"efa is true but {t!r} has no EFA support")
    if not c.instance_types:
        bad("instanceTypes", "needs at least one instance type")
    if len({s.shape for s in specs}) > 1:
        bad("instanceTypes", "mixes instance shapes (accelerator or EFA counts differ)")
    if c.capacity_type not in CAPACITY_TYPES:
        bad("capacityType", f"{c.capacity_type!r} is not one of {', '.join(CAPACITY_TYPES)}")
    if c.capacity_type == "SPOT" and len(c.instance_types) < 2:
        bad("instanceTypes", "a SPOT pool needs at least 2 instance types of the same shape")
    if c.capacity_type != "SPOT" and len(c.instance_types) > 1:
        bad("instanceTypes", f"{c.capacity_type} pools take exactly one instance type")
    if c.capacity_type == "CAPACITY_BLOCK" and not c.reserved:
        bad("capacityReservation", "is required for a CAPACITY_BLOCK pool")
    if c.capacity_type == "SPOT" and c.reserved:
        bad("capacityReservation", "SPOT pools cannot target a capacity reservation")
    if c.reserved and c.placement_group:
        bad("placementGroup", "not allowed on a reserved pool")
    if c.placement_group and not c.efa:
        bad("placementGroup", "needs efa: true")
    if (c.efa or c.reserved) and len(c.availability_zones) != 1:
        bad("availabilityZones", "EFA and reserved pools live in exactly one availability zone")
    if c.reserved and c.availability_zones and \
            c.availability_zones[0] != c.capacity_reservation.availability_zone:  # type: ignore[union-attr]
        bad("availabilityZones", "is not the reservation's availability zone")
    if len(args.subnet_ids) != len(c.availability_zones):
        bad("", f"subnet_ids: {len(args.subnet_ids)} subnets for "
                f"{len(c.availability_zones)} availability zones")
    if c.efa and args.efa_security_group_id is None:
        bad("", "efa_security_group_id: required for an EFA pool")
    if c.efa_layout not in LAYOUTS:
        bad("efaLayout", f"{c.efa_layout!r} is not one of {', '.join(LAYOUTS)}")
    if c.ami_type not in AMI_TYPES:
        bad("amiType", f"{c.ami_type!r} is not a supported AMI type")
    elif specs and any(AMI_TYPES[c.ami_type] != s.vendor for s in specs):
        bad("amiType", f"{c.ami_type!r} does not match the pool's accelerators")
    if not 0 <= c.min_size <= c.desired_size <= c.max_size or c.max_size < 1:
        bad("minSize", f"sizes must satisfy 0 <= min {c.min_size} <= desired {c.desired_size} "
                       f"<= max {c.max_size}, max >= 1")
    return problems


def pool_specs(config: GpuPoolConfig, catalog: Catalog) -> list[InstanceType]:
    return [catalog.get(t) for t in config.instance_types]


def gpu_model_label(specs: Sequence[InstanceType]) -> str:
    """The accelerator model, or the sorted models joined by `_` for a pool that mixes models of
    the same shape (a Spot pool of g5.48xlarge + g6.48xlarge is `A10G-24GB_L4-24GB`)."""
    return "_".join(sorted({s.gpu_model or "none" for s in specs}))


def node_labels(config: GpuPoolConfig, specs: Sequence[InstanceType]) -> dict[str, str]:
    """Kubernetes labels of the pool's nodes; ours win over user labels of the same key."""
    purpose = {PURPOSE_LABEL: config.purpose} if config.purpose != "training" else {}
    return {
        **purpose,
        **dict(config.labels),
        POOL_LABEL: config.name,
        ACCELERATOR_LABEL: specs[0].vendor or "none",
        GPU_MODEL_LABEL: gpu_model_label(specs),
        EFA_LABEL: "true" if config.efa else "false",
        CAPACITY_TYPE_LABEL: config.capacity_type,
        AMI_FAMILY_LABEL: "bottlerocket" if is_bottlerocket(config.ami_type) else "al2023",
    }


def node_taints(vendor: str) -> list[dict]:
    """`nvidia.com/gpu=true:NoSchedule` (or the Neuron key): only pods that ask for accelerators
    (and tolerate the taint) land on these nodes."""
    return [{"key": GPU_TAINT_KEY[vendor], "value": "true", "effect": "NO_SCHEDULE"}]


def repair_config(config: GpuPoolConfig, vendor: str) -> dict:
    """node_repair_config: off, or on with thresholds and the accelerator overrides."""
    if not config.auto_repair:
        return {"enabled": False}
    overrides = [{"node_monitoring_condition": ACCELERATED_CONDITION,
                  "node_unhealthy_reason": reason, "repair_action": action,
                  "min_repair_wait_time_mins": wait}
                 for reason, action, wait in REPAIR_OVERRIDES.get(vendor, ())]
    out = {"enabled": True, **repair_thresholds(config.max_size)}
    if overrides:
        out["node_repair_config_overrides"] = overrides
    return out


def market_options(config: GpuPoolConfig) -> Optional[dict]:
    """Capacity Blocks are their own market type; Spot is chosen by the node group's
    capacityType (price-capacity-optimized), not the launch template."""
    if config.capacity_type == "CAPACITY_BLOCK":
        return {"market_type": "capacity-block"}
    return None


def reservation_specification(config: GpuPoolConfig) -> Optional[dict]:
    """Target the pool's ODCR or Capacity Block; None for open capacity."""
    if not config.reserved:
        return None
    return {"capacity_reservation_target": {
        "capacity_reservation_id": config.capacity_reservation.id}}  # type: ignore[union-attr]


def instance_types(config: GpuPoolConfig) -> tuple[Optional[str], Optional[list[str]]]:
    """(launch template InstanceType, node group instanceTypes). Capacity Blocks name the type in
    the launch template and none in the node group (EKS's documented shape, and EKS refuses
    both at once); every other pool lists its types on the node group."""
    if config.capacity_type == "CAPACITY_BLOCK":
        return config.instance_types[0], None
    return None, list(config.instance_types)


def root_device_name(ami_type: str) -> str:
    """Bottlerocket keeps images and pods on its second (data) volume; AL2023 on the root."""
    return "/dev/xvdb" if ami_type.startswith("BOTTLEROCKET") else "/dev/xvda"


def network_interfaces(nics: Sequence[Nic], security_group_ids: Sequence) -> Optional[list]:
    if not nics:
        return None
    return [{"network_card_index": nic.network_card_index, "device_index": nic.device_index,
             "interface_type": nic.interface_type, "security_groups": list(security_group_ids),
             "delete_on_termination": "true"} for nic in nics]


def initial_desired_size(config: GpuPoolConfig, now: dt.datetime) -> int:
    """Desired size the node group is created with. A Capacity Block that has not started yet
    cannot launch anything: create the pool at 0 and scale it once the block is active
    (desiredSize drift is ignored afterwards, docs/operations.md "Capacity Block pools")."""
    reservation = config.capacity_reservation
    if config.capacity_type == "CAPACITY_BLOCK" and reservation is not None and \
            reservation.starts_at is not None and reservation.starts_at > now:
        return 0
    return config.desired_size


def update_config() -> dict:
    """One node at a time, without surging: spare GPUs rarely exist (reservations never have
    them), so MINIMAL terminates before it launches."""
    return {"max_unavailable": 1, "update_strategy": "MINIMAL"}


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
class GpuPool(pulumi.ComponentResource):
    config: GpuPoolConfig
    node_group: aws.eks.NodeGroup
    launch_template: aws.ec2.LaunchTemplate
    placement_group: Optional[aws.ec2.PlacementGroup]
    security_group_ids: list[pulumi.Input[str]]
    network_interfaces: tuple[Nic, ...]

    def __init__(self, name: str, args: GpuPoolArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:GpuPool", name, None, opts)
        catalog = args.catalog or load_catalog()
        problems = validate_gpu_pool(args, catalog)
        if problems:
            raise ValueError(f"GpuPool {name}: " + "; ".join(problems))
        self._name, self._args, self.config = name, args, args.config
        self._now = args.now or dt.datetime.now(dt.UTC)
        self._specs = pool_specs(args.config, catalog)
        self.vendor: str = self._specs[0].vendor  # type: ignore[assignment]
        self.security_group_ids = [args.cluster_security_group_id]
        if args.config.efa:
            self.security_group_ids.append(args.efa_security_group_id)  # type: ignore[arg-type]
        self.network_interfaces = pool_interfaces(self._specs, args.config.efa,
                                                  args.config.efa_layout)

        self._create_placement_group()
        self._create_launch_template()
        self._create_node_group()
        self.register_outputs({
            "nodeGroupName": self.node_group.node_group_name,
            "launchTemplateId": self.launch_template.id,
        })

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name, "trainyard.io/pool": self.config.name}

    def _create_placement_group(self) -> None:
        self.placement_group = None
        if self.config.placement_group:
            n = f"{self._name}-pg"
            self.placement_group = aws.ec2.PlacementGroup(
                n, strategy="cluster", tags=self._tags(n),
                opts=pulumi.ResourceOptions(parent=self))

    def _create_launch_template(self) -> None:
        n, c = f"{self._name}-lt", self.config
        nics = network_interfaces(self.network_interfaces, self.security_group_ids)
        self.launch_template = aws.ec2.LaunchTemplate(
            n, description=f"GPU pool {c.name}: IMDSv2, encrypted gp3 root, "
                           f"{len(self.network_interfaces)} EFA interfaces",
            update_default_version=True,
            instance_type=instance_types(c)[0],
            metadata_options=metadata_options(c.http_put_response_hop_limit),
            block_device_mappings=[root_volume(root_device_name(c.ami_type), c.root_volume_gib)],
            user_data=encoded_user_data(c.ami_type, self._specs),
            network_interfaces=nics,
            # With interfaces, security groups live on them; EC2 rejects both at once.
            vpc_security_group_ids=None if nics else list(self.security_group_ids),
            placement={"group_name": self.placement_group.name} if self.placement_group else None,
            instance_market_options=market_options(c),
            capacity_reservation_specification=reservation_specification(c),
            tag_specifications=tag_specifications(self._tags(self._name)),
            tags=self._tags(n), opts=pulumi.ResourceOptions(parent=self))

    def _create_node_group(self) -> None:
        a, c, lt = self._args, self.config, self.launch_template
        desired = initial_desired_size(c, self._now)
        if desired != c.desired_size:
            pulumi.log.info(
                f"pool {c.name}: created at desired size 0, not {c.desired_size}: its Capacity "
                f"Block starts {c.capacity_reservation.starts_at.isoformat()}; scale it once the "
                "block is active (docs/operations.md \"Capacity Block pools\")", self)
        if c.capacity_type == "CAPACITY_BLOCK":
            pulumi.log.info(f"pool {c.name} runs on a Capacity Block: scale it to 0 before a "
                            "Kubernetes version, AMI or launch-template change (EKS cannot roll "
                            "it otherwise)", self)
        self.node_group = aws.eks.NodeGroup(
            f"{self._name}-ng", cluster_name=a.cluster_name, node_role_arn=a.node_role_arn,
            version=a.kubernetes_version, ami_type=c.ami_type, capacity_type=c.capacity_type,
            instance_types=instance_types(c)[1], subnet_ids=list(a.subnet_ids),
            launch_template={"id": lt.id, "version": lt.latest_version.apply(str)},
            scaling_config={"min_size": c.min_size, "max_size": c.max_size,
                            "desired_size": desired},
            update_config=update_config(),
            node_repair_config=repair_config(c, self.vendor),
            labels=node_labels(c, self._specs), taints=node_taints(self.vendor),
            tags=self._tags(f"{self._name}-ng"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(a.depends_on),
                                        ignore_changes=["scalingConfig.desiredSize"]))
