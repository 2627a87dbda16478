"""A ResNet (He et al. 2015), written for this repository: no torchvision.

Basic blocks (two 3x3 convs) or v1.5 bottlenecks (1x1, 3x3 carrying the stride, 1x1 with x4
expansion), BatchNorm after every conv, ReLU, a 1x1 projection shortcut where the shape changes,
global average pooling and one linear classifier. Initialisation: Kaiming-normal (fan-out) for
convs, and the last BatchNorm of every residual branch starts at zero so each block begins as an
identity (Goyal et al. 2017), which makes large-batch SGD stable from the first step.

The model knows nothing about how it is run (DDP, autocast, channels_last, compile): see
``trainer.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.vision.config import ModelConfig


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout)]


class Block(nn.Module):
    """One residual block; ``branch`` ends in the BatchNorm that is zero-initialised."""

    def __init__(self, kind: str, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        if kind == "bottleneck":
            layers = [*_conv_bn(cin, width, 1), nn.ReLU(inplace=True),
                      *_conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),
                      *_conv_bn(width, cout, 1)]
        else:
            layers = [*_conv_bn(cin, width, 3, stride), nn.ReLU(inplace=True),
                      *_conv_bn(width, cout, 3)]
        self.branch = nn.Sequential(*layers)
        self.shortcut = (nn.Sequential(*_conv_bn(cin, cout, 1, stride))
                         if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.stem == "imagenet":
            stem = [nn.Conv2d(3, cfg.width, 7, stride=2, padding=3, bias=False),
                    nn.BatchNorm2d(cfg.width), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, stride=2, padding=1)]
        else:
            stem = [*_conv_bn(3, cfg.width, 3), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        stages, cin = [], cfg.width
        for i, n in enumerate(cfg.layers):
            width = cfg.width * 2**i
            cout = width * cfg.expansion
            blocks = []
            for j in range(n):
                blocks.append(Block(cfg.block, cin, width, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Block):
                nn.init.zeros_(m.branch[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, num_classes) logits."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
