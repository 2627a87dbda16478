"""LustreFileSystem: FSx for Lustre beside the EFA nodes, linked to the datasets bucket.

PERSISTENT_2 in the EFA pool's AZ (one subnet: a Lustre file system lives in one AZ), encrypted
with the storage key, reachable on the Lustre ports (988, 1018-1023) only from node security
groups and from itself (FSx servers talk to each other). A data repository association imports
the datasets bucket under /datasets; a KMS grant lets FSx's per-file-system service-linked role
read the SSE-KMS objects. With a cluster attached: the aws-fsx-csi-driver add-on (its controller
on a Pod Identity role), a StorageClass and a claim `fsx-lustre` in each team namespace, statically
bound to this file system.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws_context import aws_context
from components.compute.addons import addon_configuration
from components.config import FsxConfig
from components.services.identity import ClusterAttachment, cluster_arn, pod_identity_trust_policy
from components.services.k8s_names import FSX_CLAIM

LUSTRE_PORTS = ((988, 988), (1018, 1023))
"""LNet: 988 for servers, 1018-1023 for the privileged client ports."""
LUSTRE_VERSION = "2.15"
DEPLOYMENT_TYPE = "PERSISTENT_2"
FSX_CSI_DRIVER = "fsx.csi.aws.com"
FSX_CSI_ADDON = "aws-fsx-csi-driver"
FSX_CSI_ADDON_VERSION = "v1.6.0-eksbuild.1"
"""Pinned add-on version. Before a deploy, confirm it is offered for the cluster version:
`aws eks describe-addon-versions --addon-name aws-fsx-csi-driver --kubernetes-version 1.33`."""
FSX_CSI_CONTROLLER_SA = "fsx-csi-controller-sa"
"""Service account of the add-on's controller (kube-system)."""
STORAGE_CLASS = "fsx-lustre"
"""StorageClass name; claims refer to it by name, so it is not auto-named."""
DATASETS_PATH = "/datasets"
"""Where the datasets bucket appears inside the file system."""
BACKUP_RETENTION_DAYS = 7
SLR_GRANT_OPERATIONS = ("Decrypt", "Encrypt", "GenerateDataKey",
                        "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo")


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def fsx_s3_service_linked_role_arn(partition: str, account_id: str, file_system_id: str) -> str:
    """FSx creates one service-linked role per S3-linked file system; it is the principal that
    reads and writes the bucket (and so needs the bucket's KMS key)."""
    return (f"arn:{partition}:iam::{account_id}:role/aws-service-role/"
            f"s3.data-source.lustre.fsx.amazonaws.com/AWSServiceRoleForFSxS3Access_{file_system_id}")


def data_repository_path(bucket: str) -> str:
    return f"s3://{bucket}/"


def volume_capacity(storage_capacity_gib: int) -> str:
    return f"{storage_capacity_gib}Gi"


def csi_controller_policy() -> str:
    """The controller only describes file systems (volume validation); it creates, resizes and
    deletes nothing because Pulumi owns the file system. fsx:DescribeFileSystems supports no
    resource-level permissions, so its Resource must be "*"."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "DescribeFileSystems", "Effect": "Allow", "Action": ["fsx:DescribeFileSystems"],
         "Resource": "*"}]}, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LustreFileSystemArgs:
    config: FsxConfig
    """Typed `trainyard:storage.fsx` section (required)."""
    vpc_id: pulumi.Input[str]
    """VPC of the file system (required)."""
    availability_zone: str
    """The EFA pool's AZ (required)."""
    subnet_id: pulumi.Input[str]
    """Private subnet in `availability_zone` (required)."""
    node_security_group_ids: Mapping[str, pulumi.Input[str]]
    """Role (e.g. `cluster`, `efa`) -> security group of nodes allowed to mount (required)."""
    key_arn: pulumi.Input[str]
    """Storage KMS key: encrypts the file system and the datasets bucket (required)."""
    datasets_bucket: pulumi.Input[str]
    """Name of the datasets bucket linked under /datasets (required)."""
    datasets_bucket_arn: pulumi.Input[str]
    """Its ARN, for the KMS grant's encryption-context constraint (required)."""
    retain_on_delete: bool = False
    """Keep the file system out of `pulumi destroy`. Default false."""
    cluster: Optional[ClusterAttachment] = None
    """Cluster to install the CSI driver and claims in. Default None: AWS side only."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


class LustreFileSystem(pulumi.ComponentResource):
    file_system_id: pulumi.Output[str]
    mount_name: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    claims: dict[str, k8s.core.v1.PersistentVolumeClaim]

    def __init__(self, name: str, args: LustreFileSystemArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:LustreFileSystem", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._account, self._region, self._partition = aws_context(self)
        self._create_security_group()
        self._create_file_system()
        self._create_data_repository()
        self.claims = {}
        if args.cluster is not None:
            self._create_csi_driver(args.cluster)
            self._create_kubernetes(args.cluster)
        self.register_outputs({"fileSystemId": self.file_system_id, "mountName": self.mount_name,
                               "dnsName": self.dns_name})

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _create_security_group(self) -> None:
        n, a = self._name, self._args
        sg = aws.ec2.SecurityGroup(f"{n}-lustre", vpc_id=a.vpc_id,
                                   description="FSx for Lustre: LNet from cluster nodes and "
                                               "between file servers only",
                                   tags=self._tags(f"{n}-lustre"), opts=self._child)
        sources = {"self": sg.id, **dict(sorted(a.node_security_group_ids.items()))}
        for role, source in sources.items():
            for lo, hi in LUSTRE_PORTS:
                ports = str(lo) if lo == hi else f"{lo}-{hi}"
                rule = f"{n}-lustre-{ports}-from-{role}"
                aws.vpc.SecurityGroupIngressRule(
                    rule, security_group_id=sg.id, referenced_security_group_id=source,
                    ip_protocol="tcp", from_port=lo, to_port=hi,
                    description=f"Lustre {ports} from {role}", tags=self._tags(rule),
                    opts=self._child)
                rule = f"{n}-lustre-{ports}-to-{role}"
                aws.vpc.SecurityGroupEgressRule(
                    rule, security_group_id=sg.id, referenced_security_group_id=source,
                    ip_protocol="tcp", from_port=lo, to_port=hi,
                    description=f"Lustre {ports} to {role}", tags=self._tags(rule),
                    opts=self._child)
        self.security_group_id = sg.id

    def _create_file_system(self) -> None:
        n, a, c = self._name, self._args, self._args.config
        self.file_system = aws.fsx.LustreFileSystem(
            f"{n}-fs", deployment_type=DEPLOYMENT_TYPE, storage_type="SSD",
            storage_capacity=c.storage_capacity_gib,
            per_unit_storage_throughput=c.per_unit_storage_throughput,
            file_system_type_version=LUSTRE_VERSION, subnet_ids=a.subnet_id,
            security_group_ids=[self.security_group_id], kms_key_id=a.key_arn,
            data_compression_type="LZ4",
            automatic_backup_retention_days=BACKUP_RETENTION_DAYS,
            daily_automatic_backup_start_time="03:00", copy_tags_to_backups=True,
            skip_final_backup=False, weekly_maintenance_start_time="7:04:00",
            log_configuration={"level": "WARN_ERROR"},
            tags=self._tags(f"{n}-fs"),
            opts=pulumi.ResourceOptions(parent=self,
                                        retain_on_delete=a.retain_on_delete or None))
        self.file_system_id = self.file_system.id
        self.mount_name = self.file_system.mount_name
        self.dns_name = self.file_system.dns_name

    def _create_data_repository(self) -> None:
        n, a = self._name, self._args
        dra = aws.fsx.DataRepositoryAssociation(
            f"{n}-datasets", file_system_id=self.file_system.id, file_system_path=DATASETS_PATH,
            data_repository_path=pulumi.Output.from_input(a.datasets_bucket)
            .apply(data_repository_path),
            batch_import_meta_data_on_create=True, imported_file_chunk_size=1024,
            delete_data_in_filesystem=False,
            # Datasets flow in only: nothing written on Lustre is exported to the bucket.
            s3={"auto_import_policy": {"events": ["NEW", "CHANGED", "DELETED"]}},
            tags=self._tags(f"{n}-datasets"), opts=self._child)
        # The service-linked role exists once the association does; it gets exactly the key
        # operations S3 needs, only for objects of the datasets bucket (bucket-key context).
        aws.kms.Grant(
            f"{n}-datasets-key",
            key_id=a.key_arn,
            grantee_principal=pulumi.Output.all(self._partition, self._account,
                                                self.file_system.id)
            .apply(lambda v: fsx_s3_service_linked_role_arn(*v)),
            operations=list(SLR_GRANT_OPERATIONS),
            constraints=[{"encryption_context_subset": {"aws:s3:arn": a.datasets_bucket_arn}}],
            retire_on_delete=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[dra]))

    def _create_csi_driver(self, c: ClusterAttachment) -> None:
        n = self._name
        source = pulumi.Output.all(self._partition, self._region, self._account, c.cluster_name) \
            .apply(lambda v: cluster_arn(*v))
        role = aws.iam.Role(
            f"{n}-csi", description="FSx CSI controller (EKS Pod Identity)",
            assume_role_policy=pulumi.Output.all(self._account, source)
            .apply(lambda v: pod_identity_trust_policy(*v)),
            tags=self._tags(f"{n}-csi"), opts=self._child)
        aws.iam.RolePolicy(f"{n}-csi", role=role.id, policy=csi_controller_policy(),
                           opts=self._child)
        self.csi_role_arn = role.arn
        self.csi_addon = aws.eks.Addon(
            f"{n}-csi", cluster_name=c.cluster_name, addon_name=FSX_CSI_ADDON,
            addon_version=FSX_CSI_ADDON_VERSION,
            # Node DaemonSet on every node, tainted GPU nodes included (they are the clients).
            configuration_values=addon_configuration(FSX_CSI_ADDON),
            pod_identity_associations=[{"role_arn": role.arn,
                                        "service_account": FSX_CSI_CONTROLLER_SA}],
            resolve_conflicts_on_create="OVERWRITE", resolve_conflicts_on_update="PRESERVE",
            tags=self._tags(f"{n}-csi"),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(c.depends_on)))

    def _create_kubernetes(self, c: ClusterAttachment) -> None:
        n, cfg = self._name, self._args.config

        def opts(*extra: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=c.provider,
                                          depends_on=[*c.depends_on, *extra])

        # Static provisioning only: the file system is Pulumi's, so the class has no parameters
        # and volumes are never deleted by Kubernetes.
        storage_class = k8s.storage.v1.StorageClass(
            f"{n}-class", metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
            provisioner=FSX_CSI_DRIVER, reclaim_policy="Retain",
            volume_binding_mode="Immediate", opts=opts(self.csi_addon))
        capacity = volume_capacity(cfg.storage_capacity_gib)
        attributes = pulumi.Output.all(self.dns_name, self.mount_name).apply(
            lambda v: {"dnsname": v[0], "mountname": v[1]})
        for team, namespace in sorted(c.namespaces.items()):
            pv = k8s.core.v1.PersistentVolume(
                f"{n}-{team}",
                metadata=k8s.meta.v1.ObjectMetaArgs(labels={"trainyard.io/team": team}),
                spec=k8s.core.v1.PersistentVolumeSpecArgs(
                    capacity={"storage": capacity}, access_modes=["ReadWriteMany"],
                    volume_mode="Filesystem", persistent_volume_reclaim_policy="Retain",
                    storage_class_name=STORAGE_CLASS, mount_options=["flock"],
                    claim_ref=k8s.core.v1.ObjectReferenceArgs(namespace=team, name=FSX_CLAIM),
                    csi=k8s.core.v1.CSIPersistentVolumeSourceArgs(
                        driver=FSX_CSI_DRIVER, volume_handle=self.file_system_id,
                        volume_attributes=attributes)),
                opts=opts(storage_class))
            self.claims[team] = k8s.core.v1.PersistentVolumeClaim(
                f"{n}-{team}-claim",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=FSX_CLAIM, namespace=team,
                                                    labels={"trainyard.io/team": team}),
                spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                    access_modes=["ReadWriteMany"], storage_class_name=STORAGE_CLASS,
                    volume_name=pv.metadata.name,
                    resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                        requests={"storage": capacity})),
                opts=opts(namespace, pv))
