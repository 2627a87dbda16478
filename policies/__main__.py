"""Serve trainyard's policies to the Pulumi engine:

    pulumi preview --policy-pack policies [--policy-pack-config policies/config/<env>.json]

`PolicyPack` starts a gRPC server and never returns, so it is built here and nowhere else; the
rules themselves live in importable modules (`policies.network`, `policies.compute`, ...) that
tests and `trainyard check` use directly.
"""

import sys
from pathlib import Path

# The engine runs this file with the pack directory on sys.path; the rules are imported as the
# `policies` package, so the repository root must be importable too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    policies=POLICIES,
    enforcement_level=EnforcementLevel.ADVISORY,  # each policy sets its own level
    description="GPU training platform on AWS: network, EFA/compute, EKS, storage, IAM, "
                "Kubernetes objects, tagging/cost and supply chain.",
    provider="aws",
    tags=["aws", "eks", "gpu", "efa"],
)
