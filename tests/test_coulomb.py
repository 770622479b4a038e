"""The Coulomb engine (mlip.physics.coulomb): PME against LAMMPS ``kspace_style pppm`` and against the
engine's explicit Ewald sum at the requested accuracy, φ = ∂E/∂q, the virial by finite strain, batches,
TorchScript and float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import energy_forces_virial, lammps_reference, lower_triangular_cell, with_edges

from mlip.physics.coulomb import CoulombEngine, cutoff_for_width

KE = 14.399645


def rattled_rocksalt(seed: int, tilt: float, net_charge: float = 0.0) -> tuple[np.ndarray, ...]:
    """64 ions of a rock-salt 2×2×2 supercell (a = 5.64 Å), rattled 0.2 Å, in a cell sheared by up to
    ``tilt`` (LAMMPS lower-triangular form); charges ±1 with 0.2 e noise summing to ``net_charge``."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    frac = np.vstack([base, base + [0.5, 0, 0]])
    frac = np.vstack([(frac + np.array(s)) / 2 for s in np.ndindex(2, 2, 2)])
    cell = lower_triangular_cell(rng, [11.28, 11.28, 11.28], tilt) if tilt else np.eye(3) * 11.28
    positions = frac @ cell + rng.normal(scale=0.2, size=(len(frac), 3))
    positions = (np.linalg.solve(cell.T, positions.T).T % 1.0) @ cell
    charges = np.tile(np.repeat([1.0, -1.0], 4), 8) + rng.normal(0.0, 0.2, len(frac))
    charges += (net_charge - charges.sum()) / len(charges)
    return cell, positions, charges


def engine_fn(engine: CoulombEngine, charges: torch.Tensor, pbc: bool = True):
    """(positions, cell) -> per-atom energies ½ q φ (n,) eV of one frame, edges from ``with_edges``."""
    def energy(pos: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        n = len(pos)
        data = with_edges({"positions": pos, "cell": box[None], "pbc": torch.full((1, 3), pbc),
                           "batch": torch.zeros(n, dtype=torch.long)}, engine.cutoff)
        _, phi = engine(charges, pos, data["cell"], data["pbc"], data["batch"], data["edge_index"],
                        data["edge_vec"])
        return 0.5 * charges * phi

    return energy


def evaluate(engine: CoulombEngine, cell: np.ndarray, positions: np.ndarray, charges: np.ndarray) -> dict:
    """Energy, per-atom energies, forces and virial (numpy) of one periodic frame."""
    res = energy_forces_virial(engine_fn(engine, torch.from_numpy(charges)), torch.from_numpy(positions),
                               torch.from_numpy(cell))
    return {k: v.numpy() for k, v in res.items()}


def rms_force_error(forces: np.ndarray, reference: np.ndarray) -> float:
    """RMS per-atom force error in units of k_e e²/Å² (the unit of ``accuracy``)."""
    return float(np.sqrt(((forces - reference) ** 2).sum(axis=1).mean())) / KE


@pytest.mark.parametrize("accuracy", [1e-4, 1e-5])
def test_pme_matches_lammps_pppm(accuracy: float) -> None:
    """LAMMPS ``coul/long`` 5 Å + ``kspace_style pppm ε`` and the engine's PME (5 Å edges) at the same ε:
    each within ε of the exact sum (RMS force error, k_e e²/Å²), so within 2ε of each other; energies
    and virials within 2ε·k_e per atom."""
    cell, positions, charges = rattled_rocksalt(1, 0.2)
    lammps = lammps_reference(cell, positions, np.ones(len(positions), dtype=int), 1, [
        "pair_style coul/long 5.0", "pair_coeff * *", "pair_modify table 0", f"kspace_style pppm {accuracy}",
    ], charges=charges)
    exact = evaluate(CoulombEngine(5.0, 1e-12, "ewald"), cell, positions, charges)
    pme = evaluate(CoulombEngine(5.0, accuracy, "pme"), cell, positions, charges)
    assert rms_force_error(lammps["forces"], exact["forces"]) < accuracy  # the reference is what it claims
    assert 0.0 < rms_force_error(pme["forces"], exact["forces"]) < accuracy
    assert rms_force_error(pme["forces"], lammps["forces"]) < 2.0 * accuracy
    n = len(positions)
    assert abs(pme["energy"] - lammps["energy"]) < 2.0 * accuracy * KE * n
    assert np.abs(pme["virial"] - lammps["virial"]).max() < 2.0 * accuracy * KE * n


@pytest.mark.parametrize(("tilt", "net_charge"), [(0.0, 0.0), (0.3, 0.0), (0.25, 1.3)],
                         ids=["orthogonal", "triclinic", "charged"])
@pytest.mark.parametrize("accuracy", [1e-3, 1e-4, 1e-5, 1e-6])
def test_pme_force_error_within_accuracy(tilt: float, net_charge: float, accuracy: float) -> None:
    """PME's RMS force error against the converged explicit sum stays below the requested accuracy."""
    cell, positions, charges = rattled_rocksalt(2, tilt, net_charge)
    exact = evaluate(CoulombEngine(5.0, 1e-12, "ewald"), cell, positions, charges)
    pme = evaluate(CoulombEngine(5.0, accuracy, "pme"), cell, positions, charges)
    assert 0.0 < rms_force_error(pme["forces"], exact["forces"]) < accuracy


@pytest.mark.parametrize(("mode", "pbc"), [("ewald", True), ("pme", True), ("pme", False)],
                         ids=["ewald", "pme", "cluster"])
def test_potential_is_the_charge_derivative(mode: str, pbc: bool) -> None:
    """φ_i = ∂E/∂q_i (what charge equilibration and the LAMMPS coupling read), and E = ½ Σ q φ."""
    cell, positions, charges = rattled_rocksalt(3, 0.2, net_charge=0.7)
    engine = CoulombEngine(5.0, 1e-5, mode)
    q = torch.from_numpy(charges).requires_grad_(True)
    pos = torch.from_numpy(positions)
    data = with_edges({"positions": pos, "cell": torch.from_numpy(cell)[None], "pbc": torch.full((1, 3), pbc),
                       "batch": torch.zeros(len(q), dtype=torch.long)}, engine.cutoff)
    energy, phi = engine(q, pos, data["cell"], data["pbc"], data["batch"], data["edge_index"],
                         data["edge_vec"])
    (grad,) = torch.autograd.grad(energy.sum(), q)
    torch.testing.assert_close(grad, phi.detach(), rtol=1e-12, atol=1e-12)
    assert energy.item() == pytest.approx(0.5 * (q * phi).sum().item(), rel=1e-14)


@pytest.mark.parametrize("mode", ["ewald", "pme"])
def test_virial_matches_finite_strain(mode: str) -> None:
    """Autograd virial −∂E/∂ε (x → x(1+ε), cell → cell(1+ε)) against central differences of E."""
    cell, positions, charges = rattled_rocksalt(4, 0.3, net_charge=-0.9)
    engine = CoulombEngine(5.0, 1e-5, mode)
    fn = engine_fn(engine, torch.from_numpy(charges))
    virial = evaluate(engine, cell, positions, charges)["virial"]
    h = 1e-6
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (2, 0), (1, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = h
        plus, minus = (fn(torch.from_numpy(positions @ (np.eye(3) + s * eps)),
                          torch.from_numpy(cell @ (np.eye(3) + s * eps))).sum().item() for s in (1, -1))
        assert -(plus - minus) / (2 * h) == pytest.approx(virial[a, b], abs=1e-5 * np.abs(virial).max())


def test_batch_torchscript_float32() -> None:
    """Two periodic frames and a cluster in one batch equal the frames alone (energies and φ);
    the scripted engine agrees, and runs in float32."""
    frames = [rattled_rocksalt(5, 0.2), rattled_rocksalt(6, 0.0, net_charge=0.5)]
    cluster = frames[0][1][:7] + 30.0, frames[0][2][:7]
    parts = [(cell, pos, q, True) for cell, pos, q in frames] + [(np.zeros((3, 3)), *cluster, False)]
    engine = CoulombEngine(5.0, 1e-4, "pme")
    data = {"positions": torch.from_numpy(np.concatenate([p[1] for p in parts])),
            "cell": torch.from_numpy(np.stack([p[0] for p in parts])),
            "pbc": torch.tensor([[p[3]] * 3 for p in parts]),
            "batch": torch.cat([torch.full((len(p[1]),), b) for b, p in enumerate(parts)])}
    data = with_edges(data, engine.cutoff)
    charges = torch.from_numpy(np.concatenate([p[2] for p in parts]))

    def run(module: torch.nn.Module, d: dict, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return module(q, d["positions"], d["cell"], d["pbc"], d["batch"], d["edge_index"], d["edge_vec"])

    energy, phi = run(engine, data, charges)
    alone = [engine_fn(engine, torch.from_numpy(p[2]), p[3])(torch.from_numpy(p[1]), torch.from_numpy(p[0]))
             for p in parts]
    torch.testing.assert_close(energy, torch.stack([a.sum() for a in alone]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(0.5 * charges * phi, torch.cat(alone), rtol=1e-12, atol=1e-12)
    scripted = torch.jit.script(engine)
    torch.testing.assert_close(run(scripted, data, charges)[1], phi, rtol=1e-12, atol=1e-12)
    data32 = {k: v.float() if v.is_floating_point() else v for k, v in data.items()}
    energy32, phi32 = run(scripted.float(), data32, charges.float())
    assert energy32.dtype == phi32.dtype == torch.float32
    torch.testing.assert_close(energy32.double(), energy, rtol=1e-5, atol=1e-3)


def test_auto_mode_picks_the_cheaper_sum() -> None:
    """``auto`` takes the explicit k sum for a small cell at a tight accuracy (where PME's mesh would be
    huge) and PME for a large cell, and its result equals that mode's."""
    cell, positions, charges = rattled_rocksalt(7, 0.1)
    tight = CoulombEngine(5.0, 1e-8, "auto")
    assert tight.ewald_is_cheaper(len(positions), torch.from_numpy(cell))
    assert not CoulombEngine(5.0, 1e-4, "auto").ewald_is_cheaper(4096, torch.from_numpy(cell * 4.0))
    got = evaluate(tight, cell, positions, charges)
    ewald = evaluate(CoulombEngine(5.0, 1e-8, "ewald"), cell, positions, charges)
    np.testing.assert_array_equal(got["forces"], ewald["forces"])


def test_rejects_mixed_pbc_and_bad_options() -> None:
    from mlip.errors import UserError

    cell, positions, charges = rattled_rocksalt(8, 0.0)
    with pytest.raises(RuntimeError, match="periodic along some directions"):
        engine = CoulombEngine(5.0)
        engine(torch.from_numpy(charges), torch.from_numpy(positions), torch.from_numpy(cell)[None],
               torch.tensor([[True, True, False]]), torch.zeros(len(charges), dtype=torch.long),
               torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64))
    for kwargs in ({"mode": "p4m"}, {"accuracy": 0.0}, {"cutoff": -1.0}):
        with pytest.raises(UserError):
            CoulombEngine(**{"cutoff": 5.0, **kwargs})


def test_mesh_sum_equals_torchpme_pme_calculator() -> None:
    """The engine's PME (torch-pme's MeshInterpolator + KSpaceFilter, own mesh size) equals torch-pme's
    PMECalculator where both pick the same mesh (64 points: L/h + 1 just below a power of two)."""
    import torchpme

    from mlip.physics.coulomb import smooth_size

    assert [smooth_size(n) for n in (1, 7, 11, 13, 31, 69, 137, 271)] == [1, 8, 12, 15, 32, 72, 144, 288]
    engine = CoulombEngine(5.0, 1e-4, "pme")
    cell = torch.eye(3, dtype=torch.float64) * 62.5 * engine.mesh_spacing
    rng = np.random.default_rng(9)
    positions = torch.from_numpy(rng.uniform(0.0, 1.0, (40, 3))) @ cell
    charges = torch.from_numpy(rng.normal(0.0, 1.0, 40))
    assert engine.mesh_points(cell).tolist() == [64, 64, 64]
    potential = torchpme.CoulombPotential(smearing=engine.smearing, prefactor=KE)
    reference = torchpme.PMECalculator(potential, mesh_spacing=2.0 * engine.mesh_spacing,
                                       interpolation_nodes=engine.interpolation_nodes).double()
    half = reference(charges[:, None], cell, positions, torch.zeros(0, 2, dtype=torch.long),
                     torch.zeros(0, dtype=torch.float64))
    q = charges[:, None]
    mesh = engine.mesh_potential(q, positions, cell)  # without the self and background terms
    mesh = mesh - engine.self_term * q - engine.background_term * q.sum() / torch.linalg.det(cell)
    torch.testing.assert_close(mesh, 2.0 * half,
                               rtol=1e-12, atol=1e-12)


def frame_data(cell: np.ndarray, positions: np.ndarray, periodic: bool, cutoff: float) -> dict:
    """One frame's batch dict (float64) with its edges for ``cutoff`` Å."""
    data = {"positions": torch.from_numpy(positions), "cell": torch.from_numpy(cell)[None],
            "pbc": torch.full((1, 3), periodic), "batch": torch.zeros(len(positions), dtype=torch.long)}
    return with_edges(data, cutoff)


def potential(engine: CoulombEngine, data: dict, charges: torch.Tensor,
              widths: torch.Tensor | None = None) -> torch.Tensor:
    return engine.potential(charges, data["positions"], data["cell"], data["pbc"], data["batch"],
                            data["edge_index"], data["edge_vec"], widths)


def test_gaussian_charges_of_a_cluster_match_a_direct_sum() -> None:
    """Isolated Gaussian charges: φ_i = k_e [Σ_{j≠i} q_j erf(r/√(2(s_i² + s_j²)))/r + q_i/(√π s_i)],
    summed here pair by pair with math.erf."""
    import math

    rng = np.random.default_rng(11)
    positions = rng.uniform(0.0, 8.0, (12, 3))
    charges = rng.normal(0.0, 1.0, 12)
    widths = rng.uniform(0.3, 0.9, 12)
    expected = np.zeros(12)
    for i in range(12):
        expected[i] = charges[i] / (math.sqrt(math.pi) * widths[i])
        for j in range(12):
            if j != i:
                r = float(np.linalg.norm(positions[j] - positions[i]))
                pair_width = math.sqrt(2.0 * (widths[i] ** 2 + widths[j] ** 2))
                expected[i] += charges[j] * math.erf(r / pair_width) / r
    engine = CoulombEngine(5.0, 1e-6)
    data = frame_data(np.zeros((3, 3)), positions, False, engine.cutoff)
    got = potential(engine, data, torch.from_numpy(charges)[:, None], torch.from_numpy(widths))[:, 0]
    np.testing.assert_allclose(got.numpy(), KE * expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["ewald", "pme"])
def test_gaussian_charges_periodic_match_point_charges_minus_the_short_range_part(mode: str) -> None:
    """Periodic Gaussian charges: φ_i − k_e q_i/(√π s_i) (the Gaussian's own term) equals the
    point-charge φ_i (the engine at 1e-12, checked against LAMMPS above) minus
    k_e Σ'_{j,L} q_j erfc(r/w_ij)/r, summed here over all images within 12 Å; in a charged,
    sheared cell, to the requested accuracy."""
    cell, positions, charges = rattled_rocksalt(12, 0.25, net_charge=0.7)
    species = np.tile(np.repeat([0, 1], 4), 8)
    widths = np.array([0.45, 0.6])[species]
    accuracy = 1e-6
    engine = CoulombEngine(cutoff_for_width(0.6, accuracy), accuracy, mode)
    assert engine.max_width == pytest.approx(0.6, rel=1e-9)
    data = frame_data(cell, positions, True, engine.cutoff)
    q = torch.from_numpy(charges)[:, None]
    got = potential(engine, data, q, torch.from_numpy(widths))[:, 0].numpy()
    got -= KE * charges / (np.sqrt(np.pi) * widths)
    exact = CoulombEngine(6.0, 1e-12, "ewald")
    point = potential(exact, frame_data(cell, positions, True, exact.cutoff), q)[:, 0].numpy()
    wide = frame_data(cell, positions, True, 12.0)
    i, j = wide["edge_index"].numpy()
    r = wide["edge_vec"].norm(dim=1).numpy()
    pair_width = np.sqrt(2.0 * (widths[i] ** 2 + widths[j] ** 2))
    short = np.zeros(len(charges))
    np.add.at(short, i, charges[j] * torch.erfc(torch.from_numpy(r / pair_width)).numpy() / r)
    error = np.sqrt(np.mean((got - (point - KE * short)) ** 2)) / KE
    assert error < accuracy, error


def test_charge_channels_equal_separate_products() -> None:
    """C charge channels in one call equal C calls, periodic (PME and explicit sum) and isolated."""
    cell, positions, _ = rattled_rocksalt(13, 0.2)
    channels = torch.from_numpy(np.random.default_rng(13).normal(size=(len(positions), 3)))
    widths = torch.full((len(positions),), 0.4, dtype=torch.float64)
    for engine, periodic, w in [(CoulombEngine(5.0, 1e-5, "pme"), True, None),
                                (CoulombEngine(5.0, 1e-6, "ewald"), True, widths),
                                (CoulombEngine(5.0, 1e-6), False, widths)]:
        data = frame_data(cell if periodic else np.zeros((3, 3)), positions, periodic, engine.cutoff)
        together = potential(engine, data, channels, w)
        for c in range(3):
            alone = potential(engine, data, channels[:, c:c + 1], w)[:, 0]
            torch.testing.assert_close(together[:, c], alone, rtol=1e-12, atol=1e-12)


def test_gaussian_wider_than_the_cutoff_allows_is_an_error() -> None:
    cell, positions, charges = rattled_rocksalt(14, 0.0)
    engine = CoulombEngine(5.0, 1e-6)
    data = frame_data(cell, positions, True, engine.cutoff)
    wide = torch.full((len(positions),), 1.5 * engine.max_width, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="cutoff_for_width"):
        potential(engine, data, torch.from_numpy(charges)[:, None], wide)
    assert cutoff_for_width(1.5 * engine.max_width, 1e-6) > 5.0
