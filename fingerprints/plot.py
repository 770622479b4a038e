"""Figures of a descriptor config: radial functions and cutoff functions against distance.

The radial functions are the features of a dimer (two atoms of the first element at distance
r), so they are what the descriptors really compute: for a RANN radial block the curves are
``(r/re)^i exp(−α_i r/re) fc(r)``, for a RANN bond block ``exp(−2 α_k r/re) fc(r)²`` (j = l,
cos θ = 1), and likewise for any other registered descriptor. Features that stay zero for a
dimer (other element blocks) are not drawn.

Uses :class:`matplotlib.figure.Figure` directly (no pyplot, no display needed).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from fingerprints.cutoffs import CUTOFF_NAMES, cutoff_by_name
from fingerprints.descriptor_set import DescriptorSet


def dimer_features(module: torch.nn.Module, r: np.ndarray) -> np.ndarray:
    """Features (len(r), n_features) of centre atom 0 of a dimer of species 0 at distances r (Å)."""
    dist = torch.as_tensor(r, dtype=torch.float64)
    zeros = torch.zeros_like(dist)
    vec = torch.stack([dist, zeros, zeros], dim=1)
    n = len(dist)
    # n independent dimers in one batch: atoms 2k (centre) and 2k+1
    centers = torch.arange(n) * 2
    edge_index = torch.stack([torch.cat([centers, centers + 1]), torch.cat([centers + 1, centers])])
    edge_vec = torch.cat([vec, -vec])
    species = torch.zeros(2 * n, dtype=torch.int64)
    with torch.no_grad():
        out = module.double()(species, edge_index, edge_vec, 2 * n)
    return out[0::2].numpy()


def _cutoff_curve(module: torch.nn.Module, r: np.ndarray) -> tuple[str, np.ndarray] | None:
    dist = torch.as_tensor(r, dtype=torch.float64)
    if hasattr(module, "rc") and hasattr(module, "dr"):
        label = f"RANN fc (rc={module.rc:g}, dr={module.dr:g})"
        return label, cutoff_by_name(dist, "rann", float(module.rc), float(module.dr)).numpy()
    name = getattr(module, "cutoff_type_name", None)
    if name in CUTOFF_NAMES:
        return f"{name} (rc={module.cutoff:g})", cutoff_by_name(dist, name, float(module.cutoff), 1.0).numpy()
    return None


def plot_config(config: Mapping[str, Any] | Sequence[Mapping[str, Any]], elements: Sequence[str] = ("X",),
                r_min: float = 0.8, r_max: float | None = None, n_points: int = 400) -> Figure:
    """Radial functions (top) and cutoff functions (bottom) of a descriptor config.

    config: a DescriptorSet config (list of entries, or one entry); elements: element symbols
    the config refers to; r_min, r_max: Å range (default up to the largest cutoff + 0.5 Å).
    Returns a matplotlib Figure (save it with ``fig.savefig(path)``).
    """
    entries = [config] if isinstance(config, Mapping) else list(config)
    ds = DescriptorSet.from_config(entries, list(elements))
    r = np.linspace(r_min, r_max if r_max is not None else ds.cutoff + 0.5, n_points)
    fig = Figure(figsize=(7.0, 6.5), layout="constrained")
    ax_f, ax_c = fig.subplots(2, 1, sharex=True)
    colors = [f"C{k}" for k in range(10)]
    for index, (entry, module) in enumerate(zip(entries, ds.descriptors, strict=True)):
        values = dimer_features(module, r)
        active = [c for c in range(values.shape[1]) if np.abs(values[:, c]).max() > 0.0]
        for rank, c in enumerate(active):
            label = f"{index}: {entry['type']}" if rank == 0 else None
            ax_f.plot(r, values[:, c], color=colors[index % 10], lw=1.0, alpha=0.85, label=label)
        curve = _cutoff_curve(module, r)
        if curve is not None:
            ax_c.plot(r, curve[1], color=colors[index % 10], label=f"{index}: {curve[0]}")
    ax_f.set_ylabel("feature of a dimer")
    ax_f.set_yscale("symlog", linthresh=1e-3)
    ax_f.legend(fontsize="small")
    ax_f.set_title("Radial functions")
    ax_c.set_xlabel("r (Å)")
    ax_c.set_ylabel("cutoff function")
    ax_c.legend(fontsize="small")
    return fig
