"""Tiny encoders with set weights, for hand-computed Grad-CeAM values."""

import torch
from torch import nn


class GapLinear(nn.Module):
    """A = features(x) (identity unless given), z = W_lin @ mean_positions(A)."""

    def __init__(self, channels: int = 3, features: nn.Module | None = None, weight=None):
        super().__init__()
        self.features = features if features is not None else nn.Identity()
        self.fc = nn.Linear(channels, channels, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(channels) if weight is None else torch.as_tensor(weight))

    def forward(self, x):
        return self.fc(self.features(x).flatten(2).mean(-1))
