"""ImageRegistry: the stack's ECR repositories for the training and serving images.

Each repository has immutable tags (a pushed `:0.1.0` can never be replaced by other bits), scans
on push, is encrypted with the stack's KMS key (the storage key; the AWS managed `aws/ecr` key
when none is given) and expires untagged images beyond the newest `keep_untagged`. With
`scanning: enhanced` the registry (account and region) is switched to Amazon Inspector enhanced
scanning, on push and continuously as new CVEs are published; repository-level scan on push is
then superseded by the registry rule.

Pulling needs no KMS permission: ECR decrypts through the grant it creates on the key when the
repository is created (ECR user guide, "Encryption at rest"). Nodes pull with the
AmazonEC2ContainerRegistryPullOnly managed policy on their role (components/compute/cluster.py
NODE_POLICIES, also on Karpenter's node role).

Repository names are fixed, not auto-named: image references in config
(`kubeflow.trainingImage`) and CI pushes name them. Build, scan and push: README "Training
image"; the PR workflow builds workloads/Dockerfile and fails on fixable CRITICAL findings
(Trivy), see docs/secrets.md "Supply chain".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.config import RegistryConfig

ENHANCED_SCAN_FREQUENCY = "CONTINUOUS_SCAN"


# ----------------------------------------------------------------------------------------------
# Pure decisions
# ----------------------------------------------------------------------------------------------
def lifecycle_policy(keep_untagged: int) -> str:
    """ECR lifecycle policy: expire untagged images beyond the newest `keep_untagged`. Tagged
    images (releases) are never expired by the stack."""
    if keep_untagged < 1:
        raise ValueError(f"keep_untagged must be >= 1, got {keep_untagged}")
    return json.dumps({"rules": [{
        "rulePriority": 1,
        "description": f"Keep the newest {keep_untagged} untagged images",
        "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan",
                      "countNumber": keep_untagged},
        "action": {"type": "expire"},
    }]}, sort_keys=True)


def encryption_configuration(key_arn: Optional[pulumi.Input[str]]) -> dict:
    """KMS encryption: the given customer managed key, else ECR's AWS managed key."""
    return {"encryption_type": "KMS", **({"kms_key": key_arn} if key_arn is not None else {})}


def enhanced_scanning_rules(repositories: Mapping[str, str]) -> list[dict]:
    """Registry scanning rules covering exactly these repositories, continuously. (A registry
    holds one configuration: the repositories of other stacks in the account are not
    included; docs/secrets.md says how to share it.)"""
    filters = [{"filter": name, "filter_type": "WILDCARD"} for name in sorted(repositories.values())]
    return [{"scan_frequency": ENHANCED_SCAN_FREQUENCY, "repository_filters": filters}]


# ----------------------------------------------------------------------------------------------
# Component
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRegistryArgs:
    config: RegistryConfig
    """Typed `trainyard:registry` section (repositories, scanning mode, lifecycle) (required)."""
    key_arn: Optional[pulumi.Input[str]] = None
    """Customer managed KMS key for the images. Default None: ECR's AWS managed key."""
    retain_on_delete: bool = False
    """Keep the repositories (and their images) out of `pulumi destroy`. Default false; prod sets
    it from `storage.retainOnDelete`. Without it, destroy still fails on a repository that holds
    images (force_delete stays off), so images are never deleted by accident."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable resource. Default none."""


class ImageRegistry(pulumi.ComponentResource):
    repositories: dict[str, aws.ecr.Repository]
    repository_urls: dict[str, pulumi.Output[str]]
    scanning: Optional[aws.ecr.RegistryScanningConfiguration]

    def __init__(self, name: str, args: ImageRegistryArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("trainyard:index:ImageRegistry", name, None, opts)
        self._name, self._args = name, args
        self._create_repositories()
        self._create_scanning()
        self.register_outputs({"repositoryUrls": self.repository_urls})

    def _create_repositories(self) -> None:
        n, a = self._name, self._args
        self.repositories, self.repository_urls = {}, {}
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=a.retain_on_delete or None)
        for role, repo_name in a.config.repositories.items():
            repo = aws.ecr.Repository(
                f"{n}-{role}", name=repo_name, image_tag_mutability="IMMUTABLE",
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[encryption_configuration(a.key_arn)],
                force_delete=False, tags={**a.tags, "Name": repo_name}, opts=keep)
            aws.ecr.LifecyclePolicy(
                f"{n}-{role}", repository=repo.name,
                policy=lifecycle_policy(a.config.keep_untagged),
                opts=pulumi.ResourceOptions(parent=self))
            self.repositories[role] = repo
            self.repository_urls[role] = repo.repository_url

    def _create_scanning(self) -> None:
        self.scanning = None
        if self._args.config.scanning != "enhanced":
            return
        self.scanning = aws.ecr.RegistryScanningConfiguration(
            f"{self._name}-scanning", scan_type="ENHANCED",
            rules=enhanced_scanning_rules(self._args.config.repositories),
            opts=pulumi.ResourceOptions(parent=self))
