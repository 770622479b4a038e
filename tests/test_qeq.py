"""Charge equilibration on the Coulomb engine (mlip.physics.qeq): the conjugate-gradient charges
against a dense solve of the bordered system (numpy), derivatives through the charges by the
adjoint method against finite differences, batches, and a solve that does not converge.

The physics reference of the solver is D4's EEQ against dftd4 (tests/test_d4.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import energy_forces_virial, with_edges

from mlip.physics.coulomb import CoulombEngine, cutoff_for_width
from mlip.physics.qeq import ChargeEquilibration


def rocksalt(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64 ions of a rattled, sheared rock-salt cell: cell (3, 3), positions (64, 3) Å, species (64,)."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    frac = np.vstack([base, base + [0.5, 0, 0]])
    frac = np.vstack([(frac + np.array(s)) / 2 for s in np.ndindex(2, 2, 2)])
    cell = np.array([[11.28, 0.0, 0.0], [1.5, 11.0, 0.0], [-0.8, 1.1, 11.4]])
    positions = frac @ cell + rng.normal(scale=0.2, size=(len(frac), 3))
    return cell, positions, np.tile(np.repeat([0, 1], 4), 8)


class Problem:
    """Per-species parameters of a two-element charge problem (eV, Å): χ, J and Gaussian widths."""

    chi = torch.tensor([-1.5, 2.0], dtype=torch.float64)
    hardness = torch.tensor([6.0, 9.0], dtype=torch.float64)
    widths = torch.tensor([0.5, 0.7], dtype=torch.float64)


def solver(accuracy: float = 1e-10, mode: str = "auto") -> ChargeEquilibration:
    return ChargeEquilibration(CoulombEngine(cutoff_for_width(0.7, accuracy), accuracy, mode))


def system(qeq: ChargeEquilibration, frames: list[tuple[np.ndarray, np.ndarray, bool]],
           positions: torch.Tensor | None = None, cell: torch.Tensor | None = None) -> dict:
    """The batch dict of ``frames`` [(cell, positions, periodic)] with the engine's edges, built from
    ``positions``/``cell`` when given (differentiable)."""
    pos = positions if positions is not None else torch.from_numpy(np.concatenate([f[1] for f in frames]))
    box = cell if cell is not None else torch.from_numpy(np.stack([f[0] for f in frames]))
    data = {"positions": pos, "cell": box, "pbc": torch.tensor([[f[2]] * 3 for f in frames]),
            "batch": torch.cat([torch.full((len(f[1]),), b) for b, f in enumerate(frames)])}
    return with_edges(data, qeq.engine.cutoff)


def dense_charges(qeq: ChargeEquilibration, data: dict, species: np.ndarray, total: float) -> np.ndarray:
    """One frame's charges from numpy's dense solve of [[A + diag(J), 1], [1ᵀ, 0]] [q; λ] = [−χ; Q],
    A built column by column from the engine's potentials of unit charges."""
    n = len(species)
    widths = Problem.widths[species]
    a = qeq.engine.potential(torch.eye(n, dtype=torch.float64), data["positions"], data["cell"], data["pbc"],
                             data["batch"], data["edge_index"], data["edge_vec"], widths).numpy()
    k = 0.5 * (a + a.T) + np.diag(Problem.hardness[species].numpy())
    bordered = np.block([[k, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
    return np.linalg.solve(bordered, np.append(-Problem.chi[species].numpy(), total))[:n]


@pytest.mark.parametrize(("mode", "accuracy"), [("ewald", 1e-10), ("pme", 1e-5)])
def test_conjugate_gradients_match_a_dense_solve(mode, accuracy):
    """A periodic frame (net charge 1) and a cluster (neutral, converged long before the other
    frame) in one batch: each frame's charges equal the dense solution of the same operator to
    1e-9 e and sum to the frame's total charge."""
    cell, positions, species = rocksalt(1)
    cluster = positions[:20] + 40.0
    frames = [(cell, positions, True), (np.zeros((3, 3)), cluster, False)]
    qeq = solver(accuracy, mode)
    data = system(qeq, frames)
    both = np.concatenate([species, species[:20]])
    total = torch.tensor([1.0, 0.0], dtype=torch.float64)
    q = qeq(Problem.chi[both], Problem.hardness[both], Problem.widths[both], total, data).numpy()
    assert q[:64].sum() == pytest.approx(1.0, abs=1e-12) and abs(q[64:].sum()) < 1e-12
    assert np.abs(q).max() > 0.1
    for frame, part, sp, charge in [(frames[0], slice(0, 64), species, 1.0),
                                    (frames[1], slice(64, 84), species[:20], 0.0)]:
        dense = dense_charges(qeq, system(qeq, [frame]), sp, charge)
        np.testing.assert_allclose(q[part], dense, rtol=0, atol=1e-9)


def test_derivatives_through_the_charges_match_finite_differences():
    """U = Σ c_i q_i² + Σ d_i q_i of the equilibrated charges (not stationary in q): forces and
    virial of U plus the adjoint correction against central differences of U with re-solved
    charges, in a periodic frame and a cluster."""
    cell, positions, species = rocksalt(2)
    rng = np.random.default_rng(2)
    c = torch.from_numpy(rng.uniform(0.5, 1.5, 64))
    d = torch.from_numpy(rng.normal(size=64))
    qeq = solver(1e-12, "ewald")
    for periodic in (True, False):
        box = cell if periodic else np.zeros((3, 3))

        def energy(pos: torch.Tensor, lattice: torch.Tensor, periodic: bool = periodic) -> torch.Tensor:
            data = system(qeq, [(lattice.detach().numpy(), positions, periodic)], pos, lattice[None])
            sp = torch.from_numpy(species)
            # χ depends on the geometry too (as D4's does through the CN)
            chi = Problem.chi[sp] + 0.1 * torch.tanh(pos[:, 0] - pos[:, 0].mean())
            args = (chi, Problem.hardness[sp], Problem.widths[sp])
            q = qeq(*args, torch.zeros(1, dtype=torch.float64), data)
            q = q + torch.zeros(1, dtype=torch.float64).requires_grad_(True)
            u = c * q * q + d * q
            return u + qeq.adjoint_correction(u, q, *args, data)

        res = energy_forces_virial(energy, torch.from_numpy(positions), torch.from_numpy(box))
        h = 1e-5
        for atom, axis in [(0, 0), (17, 1), (40, 2)]:
            step = np.zeros_like(positions)
            step[atom, axis] = h
            with torch.no_grad():
                plus = energy(torch.from_numpy(positions + step), torch.from_numpy(box)).sum().item()
                minus = energy(torch.from_numpy(positions - step), torch.from_numpy(box)).sum().item()
            fd = -(plus - minus) / (2 * h)
            assert res["forces"][atom, axis].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)
        if periodic:
            for a, b in [(0, 0), (1, 2), (2, 0)]:
                strain = np.eye(3)
                strain[a, b] += h
                with torch.no_grad():
                    plus = energy(torch.from_numpy(positions @ strain), torch.from_numpy(box @ strain)).sum()
                    strain[a, b] -= 2 * h
                    minus = energy(torch.from_numpy(positions @ strain), torch.from_numpy(box @ strain)).sum()
                fd = -(plus - minus).item() / (2 * h)
                assert res["virial"][a, b].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_a_solve_that_does_not_converge_is_an_error():
    cell, positions, species = rocksalt(3)
    qeq = ChargeEquilibration(CoulombEngine(cutoff_for_width(0.7, 1e-8), 1e-8), max_iterations=2)
    data = system(qeq, [(cell, positions, True)])
    sp = torch.from_numpy(species)
    with pytest.raises(RuntimeError, match="did not converge in 2 conjugate-gradient steps"):
        qeq(Problem.chi[sp], Problem.hardness[sp], Problem.widths[sp], torch.zeros(1, dtype=torch.float64),
            data)
