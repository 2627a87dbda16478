"""Storage: everything training reads and writes, and who may.

One customer-managed KMS key (rotation on) encrypts the data buckets, EFS and FSx; `Buckets`,
`SharedFileSystem` (EFS), `LustreFileSystem` (FSx, optional) and `WorkloadIdentity` (the training
role and its Pod Identity associations) are children. Placement is decided here: EFS mount
targets in the private subnets of the GPU pools' AZs, FSx in the EFA pool's AZ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

from components.aws_context import aws_context
from components.config import StackConfig, StorageConfig
from components.services.identity import (
    CHECKPOINT_PREFIX,
    ClusterAttachment,
    WorkloadIdentity,
    WorkloadIdentityArgs,
)
from components.services.k8s_names import FSX_CLAIM, SHARED_CLAIM, TRAINING_SERVICE_ACCOUNT
from components.storage.buckets import Buckets, BucketsArgs
from components.storage.efs import SharedFileSystem, SharedFileSystemArgs
from components.storage.fsx import LustreFileSystem, LustreFileSystemArgs


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def gpu_availability_zones(config: StackConfig) -> tuple[str, ...]:
    """AZs any GPU pool may launch in, in the stack's AZ order (EFS mount targets go there)."""
    used = {az for pool in config.gpu_pools for az in pool.availability_zones}
    return tuple(az for az in config.network.availability_zones if az in used)


def fsx_availability_zone(config: StackConfig) -> Optional[str]:
    """The first EFA pool's AZ, where FSx for Lustre lives; None without an EFA pool."""
    return config.efa_azs[0] if config.efa_azs else None


def storage_key_policy(account_id: str, partition: str) -> str:
    """The account administers the key and IAM policies grant its use (the training role gets
    Decrypt/GenerateDataKey on exactly this key; EFS and FSx use grants made by their caller)."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "AccountAdmin", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                       "Action": "kms:*", "Resource": "*"}],
    }, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageArgs:
    config: StorageConfig
    """Typed `trainyard:storage` section (required)."""
    vpc_id: pulumi.Input[str]
    """VPC for mount targets and FSx (required)."""
    private_subnet_ids: Mapping[str, pulumi.Input[str]]
    """AZ -> private subnet id, every stack AZ (required)."""
    gpu_azs: tuple[str, ...]
    """AZs of the GPU pools: one EFS mount target each (see gpu_availability_zones)."""
    node_security_group_ids: Mapping[str, pulumi.Input[str]]
    """Role -> node security group allowed to reach EFS and FSx, e.g. {"cluster": ..., "efa":
    ...}. The role is part of the rules' logical names, so keep it stable (required)."""
    efa_az: Optional[str] = None
    """AZ of the EFA pool, required when FSx is enabled. Default None."""
    cluster: Optional[ClusterAttachment] = None
    """Cluster for the Kubernetes side and Pod Identity. Default None: AWS side only."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource (environment, owner, cost-center). Default none."""


class Storage(pulumi.ComponentResource):
    key: aws.kms.Key
    buckets: Buckets
    efs: Optional[SharedFileSystem]
    fsx: Optional[LustreFileSystem]
    identity: WorkloadIdentity

    def __init__(self, name: str, args: StorageArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:Storage", name, None, opts)
        c = args.config
        missing = [az for az in args.gpu_azs if az not in args.private_subnet_ids]
        if missing:
            raise ValueError(f"no private subnet for GPU AZs {missing}")
        if c.fsx.enabled and args.efa_az not in args.private_subnet_ids:
            raise ValueError(f"FSx needs the EFA pool's AZ and its private subnet, got "
                             f"{args.efa_az!r}")
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._create_key()
        self.buckets = Buckets(f"{name}-s3", BucketsArgs(c, self.key.arn, args.tags), self._child)
        self.efs = self._create_efs() if c.efs.enabled else None
        self.fsx = self._create_fsx() if c.fsx.enabled else None
        self.identity = WorkloadIdentity(
            f"{name}-identity",
            WorkloadIdentityArgs(datasets_bucket_arn=self.buckets.datasets.arn,
                                 checkpoints_bucket_arn=self.buckets.checkpoints.arn,
                                 key_arn=self.key.arn, cluster=args.cluster, tags=args.tags),
            self._child)
        self.register_outputs(self.stack_outputs())

    def _create_key(self) -> None:
        n = self._name
        account, _, partition = aws_context(self)
        self.key = aws.kms.Key(
            f"{n}-key", description="Encrypts training data: S3 buckets, EFS and FSx",
            enable_key_rotation=True, deletion_window_in_days=30,
            policy=pulumi.Output.all(account, partition).apply(lambda v: storage_key_policy(*v)),
            tags={**self._args.tags, "Name": f"{n}-key"},
            opts=pulumi.ResourceOptions(parent=self,
                                        retain_on_delete=self._args.config.retain_on_delete
                                        or None))
        aws.kms.Alias(f"{n}-key", name_prefix=f"alias/{n}-", target_key_id=self.key.key_id,
                      opts=self._child)

    def _create_efs(self) -> SharedFileSystem:
        a = self._args
        return SharedFileSystem(f"{self._name}-efs", SharedFileSystemArgs(
            config=a.config.efs, vpc_id=a.vpc_id,
            subnet_ids={az: a.private_subnet_ids[az] for az in a.gpu_azs},
            node_security_group_ids=a.node_security_group_ids, key_arn=self.key.arn,
            retain_on_delete=a.config.retain_on_delete, cluster=a.cluster, tags=a.tags),
            self._child)

    def _create_fsx(self) -> LustreFileSystem:
        a = self._args
        assert a.efa_az is not None
        return LustreFileSystem(f"{self._name}-fsx", LustreFileSystemArgs(
            config=a.config.fsx, vpc_id=a.vpc_id, availability_zone=a.efa_az,
            subnet_id=a.private_subnet_ids[a.efa_az],
            node_security_group_ids=a.node_security_group_ids, key_arn=self.key.arn,
            datasets_bucket=self.buckets.datasets.bucket,
            datasets_bucket_arn=self.buckets.datasets.arn,
            retain_on_delete=a.config.retain_on_delete, cluster=a.cluster, tags=a.tags),
            self._child)

    def stack_outputs(self) -> dict[str, Any]:
        """Outputs the job renderer and workloads read (names are an interface)."""
        out: dict[str, Any] = {
            "datasetsBucket": self.buckets.datasets.bucket,
            "checkpointsBucket": self.buckets.checkpoints.bucket,
            "checkpointPrefix": CHECKPOINT_PREFIX,
            "accessLogsBucket": self.buckets.access_logs.bucket,
            "storageKeyArn": self.key.arn,
            "trainingServiceAccount": TRAINING_SERVICE_ACCOUNT,
            "trainingRoleArn": self.identity.role_arn,
        }
        if self.efs is not None:
            out.update(efsFileSystemId=self.efs.file_system_id,
                       efsAccessPointId=self.efs.access_point_id, sharedClaimName=SHARED_CLAIM)
        if self.fsx is not None:
            out.update(fsxFileSystemId=self.fsx.file_system_id, fsxMountName=self.fsx.mount_name,
                       fsxDnsName=self.fsx.dns_name, fsxClaimName=FSX_CLAIM)
        return out
