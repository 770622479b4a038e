"""Descriptor throughput: forward + backward (forces) of the default descriptor set vs TorchANI.

System: 2000-atom periodic fcc Cu (10x10x5 cubic cells, a = 3.61 Å, rattled 0.05 Å).
Both sides get a precomputed neighbour list (ours: vesin, outside the timed region; TorchANI:
the same pairs as a half list through ``AEVComputer.compute_from_neighbors``), and the timed
region is: edge vectors from positions → features → Σ w·features → backward to positions.

Ours: ``default_config(["Cu"])`` (the power spectrum, n_max 6, l_max 4, and 8 radial-density
functions: 113 features, 5.1 Å).
TorchANI (benchmark-only, ``.venv/bin/pip install torchani --no-deps``) is configured with
the same cutoff for its radial and angular parts (8 radial shifts, 4 angular shifts × 4 angle
sections = 24 features), so both sides see the same neighbours.

Run: ``.venv/bin/python benchmarks/descriptor_speed.py [--repeat 5] [--threads 1]``.
The last printed line is a JSON object with ``speedup_vs_torchani`` (float32, our atoms/s
over TorchANI's atoms/s) and the per-dtype numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from ase.build import bulk

from fingerprints import DescriptorSet, default_config, neighbor_list

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


def copper(n_cells=(10, 10, 5)):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * n_cells
    atoms.rattle(0.05, seed=0)
    return atoms.positions.copy(), atoms.cell.array.copy()


def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ours(positions, cell, dtype, repeat):
    ds = DescriptorSet.from_config(default_config(["Cu"]), ["Cu"]).to(dtype)
    ei, _, sh = neighbor_list(positions, cell, True, ds.cutoff)
    n = len(positions)
    species = torch.zeros(n, dtype=torch.int64)
    edge_index = torch.tensor(ei)
    shift = torch.tensor(sh, dtype=dtype)
    pos0 = torch.tensor(positions, dtype=dtype)
    weights = torch.randn(n, ds.n_features, dtype=dtype)

    def step():
        pos = pos0.clone().requires_grad_(True)
        vec = pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0]) + shift
        (ds(species, edge_index, vec, n) * weights).sum().backward()

    return timed(step, repeat), ds.n_features, ei.shape[1], ds.cutoff


def torchani_aev(cutoff):
    from torchani.aev import AEVComputer

    return AEVComputer.from_constants(
        # TorchANI asserts angular cutoff < radial cutoff
        radial_cutoff=cutoff, angular_cutoff=cutoff - 1e-6, radial_eta=16.0,
        radial_shifts=np.linspace(0.9, cutoff - 0.5, 8).tolist(), angular_eta=8.0, angular_zeta=32.0,
        angular_shifts=np.linspace(0.9, cutoff - 0.8, 4).tolist(),
        sections=(np.pi * (np.arange(4) + 0.5) / 4).tolist(), num_species=1)


def half_list(positions, cell, cutoff):
    """Each pair once: i < j, or i == j with the first non-zero image shift positive."""
    ei, cs, sh = neighbor_list(positions, cell, True, cutoff)
    first = np.where(cs[:, 0] != 0, cs[:, 0], np.where(cs[:, 1] != 0, cs[:, 1], cs[:, 2]))
    keep = (ei[0] < ei[1]) | ((ei[0] == ei[1]) & (first > 0))
    return ei[:, keep], sh[keep]


def check_torchani_convention(cutoff):
    """compute_from_neighbors with our half list equals TorchANI's own forward (small cell)."""
    from torchani.neighbors import Neighbors

    positions, cell = copper((2, 2, 2))
    aev = torchani_aev(cutoff).double()
    species = torch.zeros(1, len(positions), dtype=torch.int64)
    coords = torch.tensor(positions).unsqueeze(0)
    own = aev(species, coords, cell=torch.tensor(cell), pbc=torch.ones(3, dtype=torch.bool))
    ei, sh = half_list(positions, cell, cutoff)
    idx = torch.tensor(ei)
    diff = coords[0, idx[0]] - coords[0, idx[1]] - torch.tensor(sh)
    mine = aev.compute_from_neighbors(species, coords, Neighbors(idx, diff.norm(dim=1), diff))
    assert torch.allclose(own, mine, atol=1e-10), float((own - mine).abs().max())


def torchani_time(positions, cell, cutoff, dtype, repeat):
    from torchani.neighbors import Neighbors

    aev = torchani_aev(cutoff).to(dtype)
    n = len(positions)
    ei, sh = half_list(positions, cell, cutoff)
    idx = torch.tensor(ei)
    shift = torch.tensor(sh, dtype=dtype)
    species = torch.zeros(1, n, dtype=torch.int64)
    coords0 = torch.tensor(positions, dtype=dtype).unsqueeze(0)
    n_features = aev.angular.num_feats * 1 + aev.radial.num_feats * 1
    weights = torch.randn(1, n, n_features, dtype=dtype)

    def step():
        coords = coords0.clone().requires_grad_(True)
        flat = coords[0]
        diff = flat.index_select(0, idx[0]) - flat.index_select(0, idx[1]) - shift
        out = aev.compute_from_neighbors(species, coords, Neighbors(idx, diff.norm(dim=1), diff))
        (out * weights).sum().backward()

    return timed(step, repeat), n_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    positions, cell = copper()
    n = len(positions)
    result = {"atoms": n, "threads": args.threads, "device": "cpu"}
    cutoff = None
    for dtype in (torch.float32, torch.float64):
        name = str(dtype).replace("torch.", "")
        seconds, n_features, n_edges, cutoff = ours(positions, cell, dtype, args.repeat)
        result[f"mlip_{name}"] = {"seconds": seconds, "atoms_per_s": n / seconds, "features": n_features,
                                  "edges": n_edges}
        print(f"mlip default set {name}: {seconds * 1e3:.1f} ms, {n / seconds:.0f} atoms/s "
              f"({n_features} features, {n_edges} edges, cutoff {cutoff} Å)")
    try:
        check_torchani_convention(cutoff)
        import torchani

        result["torchani_version"] = torchani.__version__
        for dtype in (torch.float32, torch.float64):
            name = str(dtype).replace("torch.", "")
            seconds, n_features = torchani_time(positions, cell, cutoff, dtype, args.repeat)
            result[f"torchani_{name}"] = {"seconds": seconds, "atoms_per_s": n / seconds,
                                          "features": n_features}
            print(f"torchani AEVComputer {name}: {seconds * 1e3:.1f} ms, {n / seconds:.0f} atoms/s "
                  f"({n_features} features)")
            result[f"speedup_{name}"] = seconds / result[f"mlip_{name}"]["seconds"]
        result["speedup_vs_torchani"] = result["speedup_float32"]
    except ImportError as err:
        result["torchani_error"] = f"torchani not importable: {err}"
        result["speedup_vs_torchani"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
