"""Ewald electrostatics against LAMMPS ``pair_style coul/long`` + ``kspace_style ewald 1e-10``,
a plain double loop for clusters, a strain sweep for smoothness; fixed learnable charges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from physics_reference import (
    energy_forces_virial,
    lammps_reference,
    lower_triangular_cell,
    random_positions,
    with_edges,
)

from mlip.physics import Ewald, FixedCharges, enforce_total_charge

KE = 14.399645


def _ionic(seed: int, n: int, tilt: float, net_charge: float = 0.0) -> tuple[np.ndarray, ...]:
    """Random ±1 charges with some disorder, summing to ``net_charge``, in a random cell."""
    rng = np.random.default_rng(seed)
    cell = lower_triangular_cell(rng, rng.uniform(5.0, 6.5, 3), tilt)
    if tilt == 0.0:
        cell = np.diag(np.diag(cell))
    positions = random_positions(rng, cell, n, min_dist=1.5)
    charges = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) + rng.normal(0.0, 0.2, n)
    charges += (net_charge - charges.sum()) / n
    return cell, positions, charges


def _ewald_fn(term: torch.nn.Module, charges: torch.Tensor, pbc: bool):
    def energy(pos: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        n = len(pos)
        data = {"positions": pos, "charges": charges, "cell": box.unsqueeze(0),
                "pbc": torch.full((1, 3), pbc), "batch": torch.zeros(n, dtype=torch.long),
                "species": torch.zeros(n, dtype=torch.long)}
        return term(with_edges(data, term.cutoff), n)

    return energy


def _compare(got: dict, ref: dict, rtol: float) -> None:
    for key in ("energy", "atomic_energies", "forces", "virial"):
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(np.asarray(got[key]), ref[key], rtol=rtol, atol=rtol * scale, err_msg=key)


@pytest.mark.parametrize(("tilt", "seed"), [(0.0, 1), (0.3, 2)], ids=["orthogonal", "triclinic"])
def test_ewald_matches_lammps(tilt: float, seed: int) -> None:
    cell, positions, charges = _ionic(seed, 12, tilt)
    ref = lammps_reference(cell, positions, np.ones(len(positions), dtype=int), 1, [
        "pair_style coul/long 9.0", "pair_coeff * *", "pair_modify table 0", "kspace_style ewald 1e-10",
    ], charges=charges)
    term = Ewald(accuracy=1e-10, mode="ewald")
    got = energy_forces_virial(_ewald_fn(term, torch.from_numpy(charges), True),
                               torch.from_numpy(positions), torch.from_numpy(cell))
    assert abs(got["energy"].item()) > 1.0
    _compare({k: v.numpy() for k, v in got.items()}, ref, rtol=1e-6)


def test_ewald_charged_cell_matches_lammps() -> None:
    """Net charge 1.3 e with the neutralising background. LAMMPS includes the background energy
    −k_e π Q²/(2Vα²) (and its per-atom split) but leaves its virial out: that term is ∝ 1/V, so its
    virial −∂E/∂ε is E_bg·I, added here to the LAMMPS virial with LAMMPS' α fixed by ``gewald``.
    (Checked once by finite differences of LAMMPS energies over strain: they agree with the corrected
    virial, not with LAMMPS' own.)"""
    cell, positions, charges = _ionic(3, 12, 0.25, net_charge=1.3)
    alpha = 0.45
    ref = lammps_reference(cell, positions, np.ones(len(positions), dtype=int), 1, [
        "pair_style coul/long 9.0", "pair_coeff * *", "pair_modify table 0", "kspace_style ewald 1e-10",
        f"kspace_modify gewald {alpha}",
    ], charges=charges)
    e_background = -KE * math.pi * charges.sum() ** 2 / (2 * abs(np.linalg.det(cell)) * alpha**2)
    ref["virial"] = ref["virial"] + e_background * np.eye(3)
    term = Ewald(accuracy=1e-10, mode="ewald")
    got = energy_forces_virial(_ewald_fn(term, torch.from_numpy(charges), True),
                               torch.from_numpy(positions), torch.from_numpy(cell))
    assert abs(e_background) > 0.5
    _compare({k: v.numpy() for k, v in got.items()}, ref, rtol=1e-6)


def _pymatgen_ewald(cell: np.ndarray, positions: np.ndarray, charges: np.ndarray) -> dict:
    """Energy and forces of pymatgen's independent Ewald sum (exact erfc), rescaled to LAMMPS' k_e."""
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice(cell), ["Na"] * len(positions), positions, coords_are_cartesian=True,
                          site_properties={"charge": charges})
    ewald = EwaldSummation(structure, acc_factor=16.0, compute_forces=True)
    scale = KE / EwaldSummation.CONV_FACT  # pymatgen's k_e is 14.3996454787 eV·Å
    return {"energy": ewald.total_energy * scale, "forces": ewald.forces * scale}


@pytest.mark.parametrize("net_charge", [0.0, 1.3])
def test_ewald_matches_pymatgen(net_charge: float) -> None:
    """pymatgen's EwaldSummation evaluates erfc exactly (LAMMPS coul/long uses a 1.5e-7 approximation),
    so it checks energy and forces far below LAMMPS' floor; it also bounds the error estimate."""
    cell, positions, charges = _ionic(8, 10, 0.3, net_charge)
    ref = _pymatgen_ewald(cell, positions, charges)
    for accuracy, tol in ((1e-12, None), (1e-3, 1e-3), (1e-5, 1e-5)):
        got = energy_forces_virial(_ewald_fn(Ewald(accuracy, mode="ewald"), torch.from_numpy(charges), True),
                                   torch.from_numpy(positions), torch.from_numpy(cell))
        if tol is None:
            assert got["energy"].item() == pytest.approx(ref["energy"], rel=1e-11)
            scale = np.abs(ref["forces"]).max()
            np.testing.assert_allclose(got["forces"].numpy(), ref["forces"], atol=1e-11 * scale)
        else:  # the requested accuracy bounds the RMS force error, in units of k_e e²/Å²
            rms = np.sqrt(((got["forces"].numpy() - ref["forces"]) ** 2).sum(axis=1).mean())
            assert 0.0 < rms / KE < tol


def test_ewald_cluster_matches_double_loop() -> None:
    rng = np.random.default_rng(4)
    cell = np.zeros((3, 3))
    positions = random_positions(rng, np.eye(3) * 8.0, 9, min_dist=1.0)
    charges = rng.normal(0.0, 1.0, 9)  # a non-neutral cluster is fine without periodicity
    n = len(positions)
    atomic = np.zeros(n)
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    for i in range(n):
        for j in range(n):
            if i != j:
                d = positions[j] - positions[i]
                r = np.linalg.norm(d)
                atomic[i] += 0.5 * KE * charges[i] * charges[j] / r
                f_on_j = KE * charges[i] * charges[j] * d / r**3
                forces[j] += f_on_j
                virial += 0.5 * np.outer(d, f_on_j)  # each pair twice: W = Σ_pairs r_ij ⊗ F_j
    ref = {"energy": atomic.sum(), "atomic_energies": atomic, "forces": forces, "virial": virial}
    got = energy_forces_virial(_ewald_fn(Ewald(), torch.from_numpy(charges), False),
                               torch.from_numpy(positions), torch.from_numpy(cell))
    _compare({k: v.numpy() for k, v in got.items()}, ref, rtol=1e-12)


def test_ewald_smooth_under_strain_sweep() -> None:
    """E(s) along a slow isotropic + shear deformation: every step E(s+Δ) − E(s) equals the trapezoid
    integral of the autograd slope dE/ds, though k vectors cross k_cut along the way. A hard cutoff
    at this coarse accuracy makes jumps of ~1e-5 eV; the trapezoid error here is ~1e-9 eV."""
    cell, positions, charges = _ionic(5, 8, 0.2)
    term = Ewald(accuracy=1e-4, mode="ewald")
    q = torch.from_numpy(charges)
    direction = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 1.2]], dtype=torch.float64)
    steps = torch.linspace(0.0, 0.08, 201, dtype=torch.float64)
    energies, slopes, n_k = [], [], []
    for s in steps:
        s_t = s.clone().requires_grad_(True)
        deform = torch.eye(3, dtype=torch.float64) + s_t * direction
        box = torch.from_numpy(cell) @ deform
        e = _ewald_fn(term, q, True)(torch.from_numpy(positions) @ deform, box).sum()
        (slope,) = torch.autograd.grad(e, s_t)
        energies.append(e.item())
        slopes.append(slope.item())
        box = box.detach()
        k_cut = term.engine.k_cutoff
        grid = torch.stack(torch.meshgrid(*[torch.arange(-8, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
        kvec = grid.double() @ (2 * math.pi * torch.linalg.inv(box).T)
        n_k.append(int((torch.linalg.vector_norm(kvec, dim=1) < k_cut).sum()))
    energies_np, slopes_np = np.array(energies), np.array(slopes)
    ds = (steps[1] - steps[0]).item()
    mismatch = np.diff(energies_np) - 0.5 * (slopes_np[1:] + slopes_np[:-1]) * ds
    assert np.abs(mismatch).max() < 1e-7, np.abs(mismatch).max()
    assert np.ptp(energies_np) > 0.1
    assert len(set(n_k)) >= 3  # the k-vector set inside k_cut really changes along the sweep


def test_ewald_batch_torchscript_float32() -> None:
    """Two frames in one batch (periodic + cluster) equal the frames alone; TorchScript and float32 agree."""
    cell, positions, charges = _ionic(6, 8, 0.2)
    cluster = positions[:5] + 20.0
    q_cluster = charges[:5]
    data = {
        "positions": torch.from_numpy(np.concatenate([positions, cluster])),
        "charges": torch.from_numpy(np.concatenate([charges, q_cluster])),
        "cell": torch.from_numpy(np.stack([cell, np.zeros((3, 3))])),
        "pbc": torch.tensor([[True] * 3, [False] * 3]),
        "batch": torch.tensor([0] * 8 + [1] * 5),
    }
    term = Ewald(accuracy=1e-8, mode="ewald")
    data = with_edges(data, term.cutoff)
    both = term(data, 13)
    first = _ewald_fn(term, torch.from_numpy(charges), True)(
        torch.from_numpy(positions), torch.from_numpy(cell))
    second = _ewald_fn(term, torch.from_numpy(q_cluster), False)(torch.from_numpy(cluster), torch.zeros(3, 3))
    torch.testing.assert_close(both, torch.cat([first, second]), rtol=1e-12, atol=1e-12)
    scripted = torch.jit.script(term)
    torch.testing.assert_close(scripted(data, 13), both, rtol=1e-12, atol=1e-12)
    data32 = {k: v.float() if v.is_floating_point() else v for k, v in data.items()}
    out32 = scripted(data32, 13)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), both, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pbc", [True, False], ids=["periodic", "cluster"])
def test_ewald_charge_gradient(pbc: bool) -> None:
    """dE/dq (what charge learning uses) against central finite differences (torch gradcheck)."""
    cell, positions, charges = _ionic(9, 6, 0.2)
    term = Ewald(accuracy=1e-8, mode="ewald")

    def energy(q: torch.Tensor) -> torch.Tensor:
        return _ewald_fn(term, q, pbc)(torch.from_numpy(positions), torch.from_numpy(cell)).sum()

    assert torch.autograd.gradcheck(energy, (torch.from_numpy(charges).requires_grad_(True),))


def test_ewald_rejects_mixed_pbc() -> None:
    cell, positions, charges = _ionic(7, 4, 0.0)
    data = {"positions": torch.from_numpy(positions), "charges": torch.from_numpy(charges),
            "cell": torch.from_numpy(cell).unsqueeze(0), "pbc": torch.tensor([[True, True, False]]),
            "batch": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(RuntimeError, match="periodic along some directions"):
        Ewald()(with_edges(data, 5.0), 4)


def test_enforce_total_charge_per_frame() -> None:
    q = torch.tensor([0.3, -0.1, 0.4, 0.2, 0.2], dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([0, 0, 0, 1, 1])
    total = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = enforce_total_charge(q, batch, total)
    torch.testing.assert_close(out.detach(), torch.tensor([0.1, -0.3, 0.2, 0.5, 0.5], dtype=torch.float64))
    (grad,) = torch.autograd.grad(out[0], q)  # ∂q'_0/∂q = δ_0j − 1/3 within frame 0
    torch.testing.assert_close(grad, torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0], dtype=torch.float64))


def test_fixed_charges_learnable_and_neutral() -> None:
    charges = FixedCharges(["Na", "Cl"], initial=[0.8, -0.7])
    data = {"positions": torch.zeros(5, 3), "species": torch.tensor([0, 1, 0, 1, 1]),
            "batch": torch.tensor([0, 0, 1, 1, 1]), "total_charge": torch.tensor([0.0, -1.0])}
    q = torch.jit.script(charges)(data, 5)
    assert q.dtype == torch.float32
    shift = (0.8 - 0.7 - 0.7 + 1.0) / 3  # frame 1 sums to -0.6 before the shift, Q = -1
    torch.testing.assert_close(q, torch.tensor([0.75, -0.75, 0.8 - shift, -0.7 - shift, -0.7 - shift]))
    q.pow(2).sum().backward()
    assert charges.charge.grad is not None and charges.charge.grad.abs().sum() > 0
    raw = FixedCharges(["Na", "Cl"], initial=[0.8, -0.7], neutralize=False)(data, 5)
    torch.testing.assert_close(raw, torch.tensor([0.8, -0.7, 0.8, -0.7, -0.7]))
