"""WorkloadIdentity: the training role and its EKS Pod Identity associations.

Every team namespace's `trainer` service account assumes one role through EKS Pod Identity. The
role reads the datasets bucket, reads and writes under the checkpoint prefix of the checkpoints
bucket, and uses the storage key only through S3. Policies are built by pure functions below so
tests can pin every action and resource.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.aws_context import aws_context
from components.services.k8s_names import TRAINING_SERVICE_ACCOUNT

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
CHECKPOINT_PREFIX = "checkpoints/"
"""Key prefix of checkpoints in the checkpoints bucket (stack output `checkpointPrefix`)."""

DATASET_READ_ACTIONS = ("s3:GetObject",)
DATASET_LIST_ACTIONS = ("s3:ListBucket",)
CHECKPOINT_LIST_ACTIONS = ("s3:ListBucket",)
CHECKPOINT_OBJECT_ACTIONS = ("s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject",
                             "s3:ListMultipartUploadParts", "s3:PutObject")
KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


@dataclass(frozen=True)
class ClusterAttachment:
    """What storage needs from the cluster to create its Kubernetes side and Pod Identity
    associations. Absent (None) until a cluster exists: then only the AWS side is built."""

    cluster_name: pulumi.Input[str]
    """EKS cluster name (required)."""
    provider: pulumi.ProviderResource
    """Kubernetes provider of the cluster (required)."""
    namespaces: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    """Team name -> its Namespace resource; claims and associations are made per team.
    Default: none."""
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    """Resources every Kubernetes object (and add-on) must wait for. Default: none."""


# ----------------------------------------------------------------------------------------------
# Pure policy documents
# ----------------------------------------------------------------------------------------------
def cluster_arn(partition: str, region: str, account_id: str, cluster_name: str) -> str:
    return f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster_name}"


def pod_identity_trust_policy(account_id: str, source_cluster_arn: Optional[str]) -> str:
    """Trust for EKS Pod Identity, limited to one account and (when known) one cluster, so no
    other account's or cluster's agent can use the role (confused deputy)."""
    condition: dict = {"StringEquals": {"aws:SourceAccount": account_id}}
    if source_cluster_arn:
        condition["ArnEquals"] = {"aws:SourceArn": source_cluster_arn}
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "EksPodIdentity", "Effect": "Allow",
            "Principal": {"Service": POD_IDENTITY_SERVICE},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": condition,
        }],
    }, sort_keys=True)


def training_policy(datasets_bucket_arn: str, checkpoints_bucket_arn: str, key_arn: str,
                    region: str, checkpoint_prefix: str = CHECKPOINT_PREFIX) -> str:
    """Least privilege for training pods: read datasets, read/write checkpoints under one
    prefix, and use the storage key only through S3 in this region."""
    if not checkpoint_prefix.endswith("/") or checkpoint_prefix.startswith("/"):
        raise ValueError(f"checkpoint prefix {checkpoint_prefix!r} must end with '/' and not "
                         "start with one")
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListDatasets", "Effect": "Allow", "Action": list(DATASET_LIST_ACTIONS),
             "Resource": datasets_bucket_arn},
            {"Sid": "ReadDatasets", "Effect": "Allow", "Action": list(DATASET_READ_ACTIONS),
             "Resource": f"{datasets_bucket_arn}/*"},
            {"Sid": "ListCheckpoints", "Effect": "Allow", "Action": list(CHECKPOINT_LIST_ACTIONS),
             "Resource": checkpoints_bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [checkpoint_prefix,
                                                        f"{checkpoint_prefix}*"]}}},
            {"Sid": "ReadWriteCheckpoints", "Effect": "Allow",
             "Action": list(CHECKPOINT_OBJECT_ACTIONS),
             "Resource": f"{checkpoints_bucket_arn}/{checkpoint_prefix}*"},
            {"Sid": "UseStorageKeyThroughS3", "Effect": "Allow", "Action": list(KEY_ACTIONS),
             "Resource": key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}},
        ],
    }, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkloadIdentityArgs:
    datasets_bucket_arn: pulumi.Input[str]
    """ARN of the datasets bucket (required)."""
    checkpoints_bucket_arn: pulumi.Input[str]
    """ARN of the checkpoints bucket (required)."""
    key_arn: pulumi.Input[str]
    """ARN of the storage KMS key the buckets use (required)."""
    cluster: Optional[ClusterAttachment] = None
    """Cluster to associate the role with. Default None: the role is created without
    associations, and its trust is limited to the account only."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


class WorkloadIdentity(pulumi.ComponentResource):
    role: aws.iam.Role
    role_arn: pulumi.Output[str]
    associations: dict[str, aws.eks.PodIdentityAssociation]

    def __init__(self, name: str, args: WorkloadIdentityArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:WorkloadIdentity", name, None, opts)
        self._name, self._args = name, args
        self._child = pulumi.ResourceOptions(parent=self)
        self._account, self._region, self._partition = aws_context(self)
        self._create_role()
        self._create_associations()
        self.register_outputs({"roleArn": self.role_arn,
                               "serviceAccount": TRAINING_SERVICE_ACCOUNT})

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Name": name}

    def _create_role(self) -> None:
        n, a = self._name, self._args
        source: pulumi.Input[Optional[str]] = None
        if a.cluster is not None:
            source = pulumi.Output.all(self._partition, self._region, self._account,
                                       a.cluster.cluster_name).apply(lambda v: cluster_arn(*v))
        self.role = aws.iam.Role(
            f"{n}-training",
            description="Training pods (EKS Pod Identity): read datasets, read/write checkpoints",
            assume_role_policy=pulumi.Output.all(self._account, source)
            .apply(lambda v: pod_identity_trust_policy(*v)),
            max_session_duration=3600, tags=self._tags(f"{n}-training"), opts=self._child)
        aws.iam.RolePolicy(
            f"{n}-training", role=self.role.id,
            policy=pulumi.Output.all(a.datasets_bucket_arn, a.checkpoints_bucket_arn, a.key_arn,
                                     self._region).apply(lambda v: training_policy(*v)),
            opts=self._child)
        self.role_arn = self.role.arn

    def _create_associations(self) -> None:
        n, c = self._name, self._args.cluster
        self.associations = {}
        if c is None:
            return
        for team, namespace in c.namespaces.items():
            self.associations[team] = aws.eks.PodIdentityAssociation(
                f"{n}-{team}", cluster_name=c.cluster_name, namespace=team,
                service_account=TRAINING_SERVICE_ACCOUNT, role_arn=self.role.arn,
                tags=self._tags(f"{n}-{team}"),
                opts=pulumi.ResourceOptions(parent=self,
                                            depends_on=[*c.depends_on, namespace]))
