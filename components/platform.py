"""Platform: the whole stack, wired from one typed StackConfig. Only wiring lives here."""

from __future__ import annotations

from typing import Any, Optional

import pulumi

from components.config import StackConfig
from components.network import Network, NetworkArgs


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

        self.register_outputs(self._outputs)

    def stack_outputs(self) -> dict[str, Any]:
        return dict(self._outputs)
