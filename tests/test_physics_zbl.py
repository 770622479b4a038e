"""ZBL term against LAMMPS ``pair_style zbl`` (through the wheel): energies, per-atom energies,
forces and virial on random two-element structures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import (
    energy_forces_virial,
    lammps_reference,
    lower_triangular_cell,
    random_positions,
)

from fingerprints.neighbors import neighbor_list
from mlip.errors import UserError
from mlip.physics import ZBL
from mlip.physics.zbl import lammps_pair_style

MODEL_CUTOFF = 4.0  # the model's edges reach beyond the ZBL cutoff; the term masks the rest


def _structure(seed: int, elements: list[str], tilt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cell = lower_triangular_cell(rng, rng.uniform(5.5, 7.0, 3), tilt)
    positions = random_positions(rng, cell, 14, min_dist=0.8)
    species = rng.integers(0, len(elements), len(positions))
    return cell, positions, species


def _zbl_energy_fn(term: torch.nn.Module, cell: np.ndarray, positions: np.ndarray, species: np.ndarray,
                   dtype: torch.dtype):
    edge_index, shifts, _ = neighbor_list(positions, cell, [True] * 3, MODEL_CUTOFF)
    ei = torch.from_numpy(edge_index)
    sh = torch.from_numpy(shifts).to(dtype)
    sp = torch.from_numpy(species)

    def energy(pos: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        data = {"positions": pos, "species": sp, "edge_index": ei,
                "edge_vec": pos[ei[1]] - pos[ei[0]] + sh @ box, "cell": box.unsqueeze(0),
                "pbc": torch.ones(1, 3, dtype=torch.bool), "batch": torch.zeros(len(pos), dtype=torch.long)}
        return term(data, len(pos))

    return energy


def _assert_matches_lammps(term: torch.nn.Module, cell: np.ndarray, positions: np.ndarray,
                           species: np.ndarray, ref: dict[str, np.ndarray]) -> None:
    """The term's energy, atomic energies, forces and virial equal LAMMPS' ``ref`` to 1e-8
    (relative to each quantity's largest value); the structure has pairs inside the ZBL range."""
    got = energy_forces_virial(_zbl_energy_fn(term, cell, positions, species, torch.float64),
                               torch.from_numpy(positions), torch.from_numpy(cell))
    assert abs(ref["energy"]) > 1.0
    for key in ("energy", "atomic_energies", "forces", "virial"):
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(got[key].numpy(), ref[key], rtol=1e-8, atol=1e-8 * scale, err_msg=key)


@pytest.mark.parametrize(
    ("elements", "z", "tilt", "seed"),
    [(["O", "Si"], [8.0, 14.0], 0.25, 1), (["Ni", "Cu"], [28.0, 29.0], 0.0, 2)],
)
def test_zbl_matches_lammps(elements: list[str], z: list[float], tilt: float, seed: int) -> None:
    inner, outer = 1.7, 3.1
    cell, positions, species = _structure(seed, elements, tilt)
    ref = lammps_reference(cell, positions, species + 1, 2, [
        f"pair_style zbl {inner} {outer}",
        f"pair_coeff 1 1 {z[0]} {z[0]}", f"pair_coeff 2 2 {z[1]} {z[1]}", f"pair_coeff 1 2 {z[0]} {z[1]}",
    ])
    # the element list of a model is sorted by Z; LAMMPS types follow the same order here
    term = ZBL(sorted(elements, key=lambda s: z[elements.index(s)]), inner, outer)
    assert term.cutoff == outer
    _assert_matches_lammps(term, cell, positions, species, ref)


def test_zbl_lammps_overlay_lines() -> None:
    """The lines ``mlip export`` writes for LAMMPS (``lammps_pair_style``, as a hybrid/overlay
    sub-style) reproduce the term; three element types, so every type pair needs its own Z_i Z_j."""
    elements = ["O", "Si", "Cu"]
    term = ZBL(elements, 1.5, 2.9)
    style, coeffs = lammps_pair_style(term, elements)
    assert style == "zbl 1.5 2.9"
    assert coeffs == ["pair_coeff 1 1 zbl 8 8", "pair_coeff 1 2 zbl 8 14", "pair_coeff 1 3 zbl 8 29",
                      "pair_coeff 2 2 zbl 14 14", "pair_coeff 2 3 zbl 14 29", "pair_coeff 3 3 zbl 29 29"]
    cell, positions, species = _structure(4, elements, 0.2)
    ref = lammps_reference(cell, positions, species + 1, 3, [f"pair_style hybrid/overlay {style}", *coeffs])
    _assert_matches_lammps(term, cell, positions, species, ref)


def test_zbl_switching_is_smooth() -> None:
    """E, dE/dr and d²E/dr² vanish at ``outer`` and are continuous at ``inner`` (autograd in r)."""
    inner, outer = 1.7, 3.1
    term = ZBL(["O", "Si"], inner, outer)

    def derivatives(r0: float) -> torch.Tensor:
        r = torch.tensor([r0], dtype=torch.float64, requires_grad=True)
        vec = torch.cat([r, torch.zeros(2, dtype=torch.float64)]).unsqueeze(0)
        data = {"species": torch.tensor([0, 1]), "edge_index": torch.tensor([[0], [1]]), "edge_vec": vec}
        e = 2.0 * term(data, 2).sum()  # one directed edge carries half the pair
        (d1,) = torch.autograd.grad(e, r, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), r)
        return torch.stack([e.detach(), d1.detach()[0], d2[0]])

    eps = 1e-9
    torch.testing.assert_close(derivatives(inner - eps), derivatives(inner + eps), rtol=1e-6, atol=1e-6)
    at_outer = derivatives(outer - eps)
    assert torch.all(at_outer.abs() < 1e-6), at_outer
    assert torch.all(derivatives(outer + eps) == 0.0)
    assert derivatives(1.0)[0] > derivatives(inner)[0] > 0.0  # repulsive


def test_zbl_torchscript_and_float32() -> None:
    cell, positions, species = _structure(3, ["O", "Si"], 0.2)
    term = ZBL(["O", "Si"], 1.7, 3.1)
    scripted = torch.jit.script(term)
    ref = energy_forces_virial(_zbl_energy_fn(term, cell, positions, species, torch.float64),
                               torch.from_numpy(positions), torch.from_numpy(cell))
    got = energy_forces_virial(_zbl_energy_fn(scripted, cell, positions, species, torch.float32),
                               torch.from_numpy(positions).float(), torch.from_numpy(cell).float())
    for key in ("atomic_energies", "forces", "virial"):
        assert got[key].dtype == torch.float32
        scale = ref[key].abs().max()
        torch.testing.assert_close(got[key].double(), ref[key], rtol=1e-5, atol=1e-5 * scale)


def test_zbl_rejects_bad_parameters() -> None:
    with pytest.raises(UserError, match="inner < outer"):
        ZBL(["Si"], 3.0, 2.0)
    with pytest.raises(UserError, match="Xx"):
        ZBL(["Si", "Xx"], 1.0, 2.0)


def test_per_pair_switching_matches_one_lammps_zbl_per_pair() -> None:
    """Switching radii per element pair (``set_switching``, as the repulsive core uses them)
    against LAMMPS with one ``zbl`` sub-style per type pair, each with its own inner/outer."""
    elements = ["O", "Si"]
    inner = torch.tensor([[1.2, 1.5], [1.5, 1.8]], dtype=torch.float64)
    outer = torch.tensor([[2.0, 2.6], [2.6, 3.0]], dtype=torch.float64)
    term = ZBL(elements, 1.0, 2.0)
    term.set_switching(inner, outer)
    cell, positions, species = _structure(5, elements, 0.1)
    ref = lammps_reference(cell, positions, species + 1, 2, [
        "pair_style hybrid/overlay zbl 1.2 2.0 zbl 1.5 2.6 zbl 1.8 3.0",
        "pair_coeff 1 1 zbl 1 8 8", "pair_coeff 1 2 zbl 2 8 14", "pair_coeff 2 2 zbl 3 14 14"])
    _assert_matches_lammps(term, cell, positions, species, ref)
