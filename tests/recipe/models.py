"""Small models the recipe tests register: one without BatchNorm (accumulation equals a big batch
exactly only without batch statistics) and one with a single BatchNorm (precise BN by hand)."""

from __future__ import annotations

from torch import nn

from classy_fast.registry import MODELS


class BNFreeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x).relu()).flatten(1))


class OneBNNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean(dim=(2, 3)))


MODELS.register("test_bn_free", lambda cfg, num_classes, in_channels: BNFreeNet(num_classes, in_channels, cfg.width),
                override=True)
MODELS.register("test_one_bn", lambda cfg, num_classes, in_channels: OneBNNet(num_classes, in_channels, cfg.width),
                override=True)
