"""Activation functions by name, as TorchScript-friendly modules.

Names: ``sigI`` (RANN: F(x) = 0.1·x + 0.9·ln(1 + eˣ)), ``silu``, ``tanh``,
``softplus``, ``linear``, ``logistic`` (1/(1 + e⁻ˣ)). n2p2's one-letter codes
``t``, ``l``, ``s``, ``p`` map to tanh, linear, logistic and softplus.
"""

import torch
from torch import Tensor

N2P2_CODES = {"t": "tanh", "l": "linear", "s": "logistic", "p": "softplus"}
NAMES = ("sigI", "silu", "tanh", "softplus", "linear", "logistic")


class Activation(torch.nn.Module):
    """Elementwise activation chosen by name (see module docstring)."""

    kind: int

    def __init__(self, name: str) -> None:
        super().__init__()
        name = N2P2_CODES.get(name, name)
        if name not in NAMES:
            raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(NAMES)}")
        self.name = name
        self.kind = NAMES.index(name)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == 0:
            return 0.1 * x + 0.9 * torch.nn.functional.softplus(x)
        if self.kind == 1:
            return torch.nn.functional.silu(x)
        if self.kind == 2:
            return torch.tanh(x)
        if self.kind == 3:
            return torch.nn.functional.softplus(x)
        if self.kind == 4:
            return x
        return torch.sigmoid(x)

    def extra_repr(self) -> str:
        return self.name
