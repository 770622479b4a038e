"""Small models and structures shared by the calculator and export tests."""

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from fingerprints import DescriptorSet, default_config
from mlip.model import Potential
from mlip.physics.d3 import D3Dispersion
from mlip.physics.ewald import Ewald
from mlip.physics.zbl import ZBL
from mlip.train.model_builder import build_potential

ELEMENTS = ["Ni", "Cu"]  # sorted by Z


def plain_model() -> Potential:
    """Untrained but non-trivial: random weights, element reference energies, energy scale."""
    torch.manual_seed(0)
    cfg = {"descriptors": "default", "hidden": [16, 16], "activation": "silu", "physics": [],
           "charges": False, "dtype": "float64"}
    model = build_potential(cfg, ELEMENTS)
    model.set_energy_reference(torch.tensor([-4.1, -3.5]), 3.0)
    return model


def physics_model() -> Potential:
    """Charges + Ewald, ZBL and D3 (two long-range terms) on top of the networks."""
    torch.manual_seed(1)
    descriptors = DescriptorSet.from_config(default_config(ELEMENTS), ELEMENTS)
    terms = [ZBL(ELEMENTS, inner=1.0, outer=2.2), D3Dispersion(ELEMENTS, cutoff=9.0, cn_cutoff=8.0),
             Ewald(1e-8)]
    model = Potential(descriptors, ELEMENTS, hidden=[16, 16], physics=terms, charges="network").double()
    model.set_energy_reference(torch.tensor([-4.1, -3.5]), 3.0)
    return model


def triclinic_cell(seed: int = 0) -> Atoms:
    """16 atoms of two elements in a sheared, rattled fcc cell (7.3 x 7.2 x 3.6 Å)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[0, 3, 5, 6, 10, 12, 15]] = 28
    shear = np.array([[1.0, 0.08, -0.05], [0.1, 1.0, 0.06], [0.03, 0.07, 1.0]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(0.08, seed=seed)
    return atoms


def small_cell() -> Atoms:
    """Two atoms in a triclinic cell much smaller than the 5.5 Å cutoff (many self-images)."""
    cell = [[2.6, 0.0, 0.0], [0.9, 2.5, 0.0], [0.4, 0.7, 2.7]]
    return Atoms("CuNi", scaled_positions=[[0.0, 0.0, 0.0], [0.52, 0.47, 0.55]], cell=cell, pbc=True)


def molecule() -> Atoms:
    """An isolated 6-atom cluster (no cell)."""
    pos = [[0, 0, 0], [2.4, 0.1, 0], [1.1, 2.2, 0.2], [0.3, 0.9, 2.3], [2.6, 2.0, 1.9], [-1.5, 1.8, 1.2]]
    return Atoms("Cu3Ni3", positions=pos, pbc=False)


STRUCTURES = {"triclinic": triclinic_cell, "small_cell": small_cell, "molecule": molecule}
