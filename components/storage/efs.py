"""SharedFileSystem: EFS shared by every training namespace.

A KMS-encrypted file system with mount targets in the private subnets of the GPU AZs, reachable on
NFS (2049) only from the node security groups; one access point that pins the root directory and
POSIX identity; automatic backups. With a cluster attached it also creates the `efs-shared`
StorageClass and, in each team namespace, the ReadWriteMany claim `shared-efs` statically bound to
that access point (the EFS CSI driver itself is a cluster add-on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.config import EfsConfig
from components.services.identity import ClusterAttachment
from components.services.k8s_names import SHARED_CLAIM

NFS_PORT = 2049
EFS_CSI_DRIVER = "efs.csi.aws.com"
STORAGE_CLASS = "efs-shared"
"""StorageClass name; claims and users refer to it by name, so it is not auto-named."""
ROOT_DIRECTORY = "/training"
POSIX_UID = 1000
POSIX_GID = 1000
ROOT_PERMISSIONS = "0775"
NOMINAL_CAPACITY = "1Ti"
"""EFS is elastic; Kubernetes requires a capacity on the volume and ignores it for EFS."""


def volume_handle(file_system_id: str, access_point_id: str) -> str:
    """EFS CSI static volume handle: `<fs-id>::<fsap-id>` mounts through the access point."""
    return f"{file_system_id}::{access_point_id}"


def access_point_root() -> dict:
    """Root directory the access point enforces, created with the training identity."""
    return {"path": ROOT_DIRECTORY,
            "creation_info": {"owner_uid": POSIX_UID, "owner_gid": POSIX_GID,
                              "permissions": ROOT_PERMISSIONS}}


def access_point_user() -> dict:
    """POSIX identity every NFS call through the access point is made as, whatever the
    container's own uid."""
    return {"uid": POSIX_UID, "gid": POSIX_GID}


@dataclass(frozen=True)
class SharedFileSystemArgs:
    config: EfsConfig
    """Typed `trainyard:storage.efs` section (required)."""
    vpc_id: pulumi.Input[str]
    """VPC of the mount targets (required)."""
    subnet_ids: Mapping[str, pulumi.Input[str]]
    """AZ -> private subnet id for one mount target each: the GPU AZs (required, non-empty)."""
    node_security_group_ids: Mapping[str, pulumi.Input[str]]
    """Role (e.g. `cluster`, `efa`) -> security group of nodes allowed to mount (required)."""
    key_arn: pulumi.Input[str]
    """KMS key encrypting the file system (required)."""
    retain_on_delete: bool = False
    """Keep the file system (and its backup policy) out of `pulumi destroy`. Default false."""
    cluster: Optional[ClusterAttachment] = None
    """Cluster to create the StorageClass and claims in. Default None: AWS side only."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


class SharedFileSystem(pulumi.ComponentResource):
    file_system_id: pulumi.Output[str]
    access_point_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    claims: dict[str, k8s.core.v1.PersistentVolumeClaim]

    def __init__(self, name: str, args: SharedFileSystemArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:SharedFileSystem", name, None, opts)
        if not args.subnet_ids:
            raise ValueError("SharedFileSystem needs at least one subnet for a mount target")
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._create_security_group()
        self._create_file_system()
        self._create_mount_targets()
        self._create_access_point()
        self.claims = {}
        if args.cluster is not None:
            self._create_kubernetes(args.cluster)
        self.register_outputs({"fileSystemId": self.file_system_id,
                               "accessPointId": self.access_point_id,
                               "securityGroupId": self.security_group_id})

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _create_security_group(self) -> None:
        n, a = self._name, self._args
        sg = aws.ec2.SecurityGroup(f"{n}-nfs", vpc_id=a.vpc_id,
                                   description="EFS mount targets: NFS from cluster nodes only",
                                   tags=self._tags(f"{n}-nfs"), opts=self._child)
        for role, source in sorted(a.node_security_group_ids.items()):
            aws.vpc.SecurityGroupIngressRule(
                f"{n}-nfs-from-{role}", security_group_id=sg.id,
                referenced_security_group_id=source, ip_protocol="tcp", from_port=NFS_PORT,
                to_port=NFS_PORT, description=f"NFS from {role} node security group",
                tags=self._tags(f"{n}-nfs-from-{role}"), opts=self._child)
        self.security_group_id = sg.id

    def _create_file_system(self) -> None:
        n, a = self._name, self._args
        self.file_system = aws.efs.FileSystem(
            f"{n}-fs", encrypted=True, kms_key_id=a.key_arn, performance_mode="generalPurpose",
            throughput_mode=a.config.throughput_mode,
            lifecycle_policies=[{"transition_to_ia": "AFTER_30_DAYS"},
                                {"transition_to_primary_storage_class": "AFTER_1_ACCESS"}],
            tags=self._tags(f"{n}-fs"),
            opts=pulumi.ResourceOptions(parent=self,
                                        retain_on_delete=a.retain_on_delete or None))
        self.file_system_id = self.file_system.id
        aws.efs.BackupPolicy(
            f"{n}-backup", file_system_id=self.file_system.id,
            backup_policy={"status": "ENABLED" if a.config.backups else "DISABLED"},
            opts=pulumi.ResourceOptions(parent=self,
                                        retain_on_delete=a.retain_on_delete or None))

    def _create_mount_targets(self) -> None:
        n = self._name
        self.mount_targets = {
            az: aws.efs.MountTarget(f"{n}-mt-{az}", file_system_id=self.file_system.id,
                                    subnet_id=subnet, security_groups=[self.security_group_id],
                                    opts=self._child)
            for az, subnet in sorted(self._args.subnet_ids.items())}

    def _create_access_point(self) -> None:
        n = self._name
        ap = aws.efs.AccessPoint(f"{n}-training", file_system_id=self.file_system.id,
                                 root_directory=access_point_root(),
                                 posix_user=access_point_user(),
                                 tags=self._tags(f"{n}-training"), opts=self._child)
        self.access_point_id = ap.id

    def _create_kubernetes(self, c: ClusterAttachment) -> None:
        n = self._name

        def opts(*extra: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=c.provider,
                                          depends_on=[*c.depends_on, *extra])

        # Pods can only mount once a mount target exists in their AZ.
        mounts = list(self.mount_targets.values())
        storage_class = k8s.storage.v1.StorageClass(
            f"{n}-class",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
            provisioner=EFS_CSI_DRIVER,
            # Claims beyond the shared one get their own access point under /dynamic.
            parameters={"provisioningMode": "efs-ap", "fileSystemId": self.file_system_id,
                        "directoryPerms": "700", "basePath": "/dynamic",
                        "ensureUniqueDirectory": "true"},
            reclaim_policy="Delete", volume_binding_mode="Immediate",
            opts=opts(*mounts))
        handle = pulumi.Output.all(self.file_system_id, self.access_point_id) \
            .apply(lambda v: volume_handle(*v))
        for team, namespace in sorted(c.namespaces.items()):
            pv = k8s.core.v1.PersistentVolume(
                f"{n}-{team}",
                metadata=k8s.meta.v1.ObjectMetaArgs(labels={"trainyard.io/team": team}),
                spec=k8s.core.v1.PersistentVolumeSpecArgs(
                    capacity={"storage": NOMINAL_CAPACITY},
                    access_modes=["ReadWriteMany"], volume_mode="Filesystem",
                    persistent_volume_reclaim_policy="Retain",
                    storage_class_name=STORAGE_CLASS,
                    # Reserved for this team's claim: no other claim can bind it.
                    claim_ref=k8s.core.v1.ObjectReferenceArgs(namespace=team, name=SHARED_CLAIM),
                    csi=k8s.core.v1.CSIPersistentVolumeSourceArgs(driver=EFS_CSI_DRIVER,
                                                                   volume_handle=handle)),
                opts=opts(storage_class, *mounts))
            self.claims[team] = k8s.core.v1.PersistentVolumeClaim(
                f"{n}-{team}-claim",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=SHARED_CLAIM, namespace=team,
                                                    labels={"trainyard.io/team": team}),
                spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                    access_modes=["ReadWriteMany"], storage_class_name=STORAGE_CLASS,
                    volume_name=pv.metadata.name,
                    resources=k8s.core.v1.VolumeResourceRequirementsArgs(
                        requests={"storage": NOMINAL_CAPACITY})),
                opts=opts(namespace, pv))
