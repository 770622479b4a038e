"""Per-element feed-forward networks: one MLP per element, applied to the
atoms of that element."""

from typing import List

import torch
from torch import Tensor

from mlip.model.activations import Activation


def mlp(n_in: int, hidden: List[int], n_out: int, activation: str) -> torch.nn.Sequential:
    """A plain MLP: Linear → activation for each hidden width, then a linear output layer."""
    layers: List[torch.nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [torch.nn.Linear(width, h), Activation(activation)]
        width = h
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)


class ElementNetworks(torch.nn.Module):
    """One network per element.

    forward(features: (n, n_in), species: (n,) int64) -> (n, n_out)
    """

    n_species: int
    n_out: int

    def __init__(self, n_species: int, n_in: int, hidden: List[int], activation: str = "silu",
                 n_out: int = 1) -> None:
        super().__init__()
        self.n_species = n_species
        self.n_out = n_out
        self.nets = torch.nn.ModuleList([mlp(n_in, hidden, n_out, activation) for _ in range(n_species)])

    def forward(self, features: Tensor, species: Tensor) -> Tensor:
        out = torch.zeros(features.shape[0], self.n_out, dtype=features.dtype, device=features.device)
        for s, net in enumerate(self.nets):
            idx = torch.nonzero(species == s).squeeze(1)
            if idx.numel() > 0:
                out = out.index_copy(0, idx, net(features.index_select(0, idx)))
        return out
