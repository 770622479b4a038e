"""DFT-D3 dispersion with Becke–Johnson (rational) damping, as a long-range physics term.

Energy (Grimme, Antony, Ehrlich, Krieg, J. Chem. Phys. 132, 154104 (2010); BJ damping:
Grimme, Ehrlich, Goerigk, J. Comput. Chem. 32, 1456 (2011)), over every pair (i, j) and
every periodic image with r_ij < ``cutoff``::

    E = −½ Σ_i Σ'_{j,L} [ s6 C6_ij / (r⁶ + R0⁶) + s8 C8_ij / (r⁸ + R0⁸) ]
    R0 = a1 √(C8_ij/C6_ij) + a2,        C8_ij = 3 C6_ij q_i q_j,   q = √(½ ⟨r⁴⟩/⟨r²⟩ √Z)
    C6_ij = Σ_ab w_i^a w_j^b C6ref(Z_i, Z_j, a, b),   w_i^a ∝ exp(−4 (CN_i − CNref_a)²), Σ_a w_i^a = 1
    CN_i = Σ'_{j,L, r < cn_cutoff} 1 / (1 + exp(−16 (4/3 (Rcov_i + Rcov_j) / r − 1)))

E_i is half the sum over the pairs of atom i, as in LAMMPS ``compute pe/atom``. Both
cutoffs are hard (as in the reference program and LAMMPS ``pair_style dispersion/d3``);
the defaults are the reference program's √9000 bohr ≈ 50.20 Å for the energy and
√1600 bohr ≈ 21.17 Å for CN. No three-body (ATM) term, like LAMMPS.

C6 normalisation: the weights are normalised per atom (a softmax over the references), which
equals the reference program's normalisation over the pair grid, Σ_ab exp(−4(ΔCN_ia² + ΔCN_jb²)).
The reference program (and LAMMPS) replaces C6_ij by the nearest reference pair's value, with
zero CN derivative, when that grid sum is below 1e-99, which happens when an atom's CN lies
≳ 5 above its highest reference (metals, dense ionic solids); ``grid_fallback=True`` (default)
does the same, so the numbers match LAMMPS. ``grid_fallback=False`` keeps the per-atom
weights throughout: smooth, as in simple-dftd3/tad-dftd3; the two differ by ~1e-5 in C6 of
pairs whose partner's CN lies between references (e.g. a surface O next to a bulk-like Mg).

Units: C6 tables are Hartree·bohr⁶; converted with bohr = 0.52917725 Å and
Hartree = 27.21140795 eV, the constants of LAMMPS ``pair_style dispersion/d3``, so that both
give the same numbers. ``a2`` is given in bohr, as published.

Parameters (``mlip/physics/data/d3_reference.npz``, elements Z = 1..94, index 0 unused):
``c6_ref`` (95, 95, 7, 7) Hartree·bohr⁶ and ``cn_ref`` (95, 7) (−1 = no reference) from
tad-dftd3 0.7.0 (``reference-c6.pt``, ``reference.py``; Apache-2.0, https://github.com/dftd3/tad-dftd3),
the published D3 reference values of Grimme et al.; ``r4r2`` (95,) ⟨r⁴⟩/⟨r²⟩ in bohr² from
tad-dftd3 ``data/r4r2.py``; ``rcov`` (95,) Å, Pyykkö–Atsumi covalent radii (metals −10 %)
from tad-mctc 0.11.3 ``data/radii.py`` (Apache-2.0). Only the numbers were extracted.

Pairs: a cell list (:func:`~mlip.physics.pairs.half_pairs`) finds each pair within
max(``cutoff``, ``cn_cutoff``) once, periodic images included, in chunks of centres (a bounded
number of candidates at a time), and C6 is built per pair, not for all N² atom pairs: time and
memory O(N · pairs per atom)
(~1.4·10³ pairs per atom at 20 Å in Cu; ~2·10⁴ at the reference program's 50 Å). The search is
:mod:`mlip.physics.pairs` (why it is not vesin-torch: see there).

TorchScript-compiled: no ``from __future__ import annotations`` here.
"""

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from mlip.errors import UserError
from mlip.physics.base import PhysicsTerm
from mlip.physics.pairs import half_pairs
from parsers.units import BOHR_LAMMPS_D3, HARTREE_LAMMPS_D3

BOHR, HARTREE = BOHR_LAMMPS_D3, HARTREE_LAMMPS_D3  # the constants of LAMMPS dispersion/d3
K1 = 16.0  # steepness of the CN counting function
K2 = 4.0 / 3.0  # scaling of the covalent radii
K3 = 4.0  # width of the Gaussian reference weights
DATA_FILE = Path(__file__).parent / "data" / "d3_reference.npz"

# Published BJ parameters (s6, s8, a1, a2 / bohr), Grimme's D3 tables.
BJ_PARAMETERS: Dict[str, Tuple[float, float, float, float]] = {
    "pbe": (1.0, 0.7875, 0.4289, 4.4407),
    "pbe0": (1.0, 1.2177, 0.4145, 4.8593),
    "pbesol": (1.0, 2.9491, 0.4466, 6.1742),
    "revpbe": (1.0, 2.3550, 0.5238, 3.5016),
    "rpbe": (1.0, 0.8318, 0.1820, 4.0094),
    "hse06": (1.0, 2.310, 0.383, 5.685),
    "tpss": (1.0, 1.9435, 0.4535, 4.4752),
    "b3-lyp": (1.0, 1.9889, 0.3981, 4.4211),
    "b-lyp": (1.0, 2.6996, 0.4298, 4.2359),
    "b-p": (1.0, 3.2822, 0.3946, 4.8516),
    "b97-d": (1.0, 2.2609, 0.5545, 3.2297),
    "r2scan": (1.0, 0.7898, 0.4948, 5.7308),
}
NOT_IN_LAMMPS = {"r2scan"}  # names LAMMPS ``pair_style dispersion/d3 bj`` does not know (LAMMPS 2024-2025)


def bj_parameters(functional: Optional[str], s6: Optional[float] = None, s8: Optional[float] = None,
                  a1: Optional[float] = None,
                  a2: Optional[float] = None) -> Tuple[float, float, float, float]:
    """(s6, s8, a1, a2/bohr) for ``functional``, each overridden by an explicit value.

    ``functional=None`` needs all four values. Unknown names raise UserError.
    """
    if functional is None:
        base: List[Optional[float]] = [None, None, None, None]
    else:
        key = functional.lower()
        if key not in BJ_PARAMETERS:
            raise UserError(f"d3: no BJ parameters for functional {functional!r}; known: "
                            f"{', '.join(sorted(BJ_PARAMETERS))} (or give s6, s8, a1, a2)")
        base = list(BJ_PARAMETERS[key])
    values = [v if v is not None else b for v, b in zip((s6, s8, a1, a2), base, strict=True)]
    missing = [n for n, v in zip(("s6", "s8", "a1", "a2"), values, strict=True) if v is None]
    if missing:
        raise UserError(f"d3: without a functional, give {', '.join(missing)}")
    return float(values[0]), float(values[1]), float(values[2]), float(values[3])


def lammps_pair_style(term: torch.nn.Module, elements: List[str]) -> Optional[Tuple[str, List[str]]]:
    """The LAMMPS ``pair_style dispersion/d3`` that computes what ``term`` (a D3Dispersion, scripted
    or not) does: (sub-style with its arguments, the commands that follow ``pair_style
    hybrid/overlay``), LAMMPS atom types 1.. being ``elements``; None where LAMMPS cannot
    (explicit BJ parameters instead of a named functional, a functional in ``NOT_IN_LAMMPS``,
    or ``grid_fallback=False``). The commands are its ``pair_coeff`` and a ``neigh_modify one``
    large enough for its full neighbour list at up to 0.2 atoms/Å³ within the larger cutoff plus
    LAMMPS' default 2 Å skin (never below LAMMPS' defaults, one 2000 and page 100000, which
    overflow at 20 Å in solids)."""
    if not term.functional or term.functional in NOT_IN_LAMMPS or not term.grid_fallback:
        return None
    reach = max(term.energy_cutoff, term.cn_cutoff) + 2.0
    one = max(2000, 1000 * int(math.ceil(4.0 / 3.0 * math.pi * reach**3 * 0.2 / 1000.0)))
    return (f"dispersion/d3 bj {term.functional} {term.energy_cutoff!r} {term.cn_cutoff!r}",
            ["pair_coeff * * dispersion/d3 " + " ".join(elements),
             f"neigh_modify one {one} page {max(100000, 10 * one)}"])


class D3Dispersion(PhysicsTerm):
    """DFT-D3(BJ) dispersion energy per atom (eV), summed over all periodic images.

    Args:
        elements: the model's element symbols, sorted by atomic number (Z ≤ 94).
        functional: name in ``BJ_PARAMETERS`` (default ``"pbe"``: s6 1, s8 0.7875,
            a1 0.4289, a2 4.4407 bohr), or None with all of s6, s8, a1, a2 given.
        s6, s8, a1, a2: explicit BJ parameters (a2 in bohr), overriding the functional's.
        cutoff: Å, pair cutoff of the energy (default √9000 bohr ≈ 50.20 Å).
        cn_cutoff: Å, pair cutoff of the coordination numbers (default √1600 bohr ≈ 21.17 Å).
        grid_fallback: the reference program's nearest-reference C6 where the pair-grid weight
            sum is below 1e-99 (default, as LAMMPS), or smooth per-atom weights (False).
        chunk: candidate pairs the pair search examines at a time (bounds its transient memory,
            ~100 bytes per candidate; default 2¹⁸).

    ``forward(data, n_local)`` reads ``positions`` (N, 3) Å, ``species`` (N,), ``cell``
    (B, 3, 3) Å, ``pbc`` (B, 3), ``batch`` (N,); the atoms ``[:n_local]`` of each frame
    are the whole periodic system. Returns (n_local,) eV. Not edge-based: ``cutoff``
    (the PhysicsTerm attribute) is 0; the pair cutoffs are ``energy_cutoff``/``cn_cutoff``.
    ``functional`` is the functional's name, or "" when BJ parameters were given explicitly.
    """

    energy_cutoff: float
    cn_cutoff: float
    k1: float
    k3: float
    grid_fallback: bool
    log_threshold: float
    s6: float
    s8: float
    a1: float
    a2: float
    chunk: int
    functional: str

    def __init__(self, elements: List[str], functional: Optional[str] = "pbe",
                 s6: Optional[float] = None, s8: Optional[float] = None,
                 a1: Optional[float] = None, a2: Optional[float] = None,
                 cutoff: float = math.sqrt(9000.0) * BOHR,
                 cn_cutoff: float = math.sqrt(1600.0) * BOHR, grid_fallback: bool = True,
                 chunk: int = 1 << 18) -> None:
        super().__init__("d3", cutoff=0.0, long_range=True, needs_charges=False)
        from ase.data import atomic_numbers

        if cutoff <= 0.0 or cn_cutoff <= 0.0:
            raise UserError(f"d3: cutoffs must be positive, got cutoff={cutoff}, cn_cutoff={cn_cutoff}")
        unknown = [e for e in elements if e not in atomic_numbers or not 1 <= atomic_numbers[e] <= 94]
        if unknown:
            raise UserError(f"d3: no D3 reference data for element(s) {', '.join(unknown)} (H..Pu only)")
        self.s6, self.s8, self.a1, a2_bohr = bj_parameters(functional, s6, s8, a1, a2)
        overridden = any(v is not None for v in (s6, s8, a1, a2))
        self.functional = functional.lower() if functional is not None and not overridden else ""
        self.a2 = a2_bohr * BOHR
        self.energy_cutoff = float(cutoff)
        self.k1, self.k3 = K1, K3
        self.grid_fallback = bool(grid_fallback)
        self.log_threshold = math.log(1e-99)
        self.cn_cutoff = float(cn_cutoff)
        self.chunk = int(chunk)

        z = np.array([atomic_numbers[e] for e in elements], dtype=np.int64)
        with np.load(DATA_FILE) as table:
            cn_ref = table["cn_ref"][z]
            n_ref = int((cn_ref >= 0).sum(axis=1).max())
            c6 = table["c6_ref"][z[:, None], z[None, :], :n_ref, :n_ref] * HARTREE * BOHR**6
            r4r2 = table["r4r2"][z]
            rcov = table["rcov"][z]
        cn_ref = cn_ref[:, :n_ref]
        self.register_buffer("c6_ref", torch.tensor(c6, dtype=torch.float64))  # (S, S, R, R) eV Å⁶
        self.register_buffer("cn_ref", torch.tensor(cn_ref, dtype=torch.float64))  # (S, R)
        self.register_buffer("ref_valid", torch.tensor(cn_ref >= 0))  # (S, R)
        self.register_buffer("rcov", torch.tensor(K2 * rcov, dtype=torch.float64))  # (S,) Å
        q = np.sqrt(0.5 * r4r2 * np.sqrt(z)) * BOHR
        self.register_buffer("q", torch.tensor(q, dtype=torch.float64))  # (S,) Å

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        positions = data["positions"]
        local_batch = data["batch"][:n_local]
        energies = torch.zeros(n_local, dtype=positions.dtype, device=positions.device)
        for b in range(data["cell"].shape[0]):
            idx = (local_batch == b).nonzero().squeeze(1)
            if idx.numel() > 0:
                e = self.frame_energies(positions[idx], data["species"][idx], data["cell"][b], data["pbc"][b])
                energies = energies.index_add(0, idx, e)
        return energies

    def coordination_numbers(self, species: Tensor, i: Tensor, j: Tensor, r: Tensor, n_atoms: int) -> Tensor:
        """D3 coordination numbers (n_atoms,) from pairs i, j (P,), each listed once, at r (P,) Å."""
        near = (r < self.cn_cutoff).nonzero().squeeze(1)
        i, j, r = i.index_select(0, near), j.index_select(0, near), r.index_select(0, near)
        rcov = self.rcov.to(r.dtype).index_select(0, species)
        rsum = rcov.index_select(0, i) + rcov.index_select(0, j)
        count = torch.sigmoid(self.k1 * (rsum / r - 1.0))
        cn = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        return cn.index_add(0, i, count).index_add(0, j, count)

    def pair_c6(self, species: Tensor, cn: Tensor, i: Tensor, j: Tensor) -> Tensor:
        """C6_ij (P,) eV Å⁶ of the pairs i, j (P,), interpolated at the coordination numbers cn (N,)."""
        dcn = cn[:, None] - self.cn_ref.to(cn.dtype)[species]
        logits = (-self.k3 * dcn * dcn).masked_fill(~self.ref_valid[species], float("-inf"))
        c6_ref = self.c6_ref.to(cn.dtype)
        n_species, n_ref = c6_ref.shape[0], c6_ref.shape[2]
        under = torch.zeros(0, dtype=torch.bool, device=cn.device)
        c6_near = torch.zeros(0, dtype=cn.dtype, device=cn.device)
        if self.grid_fallback:
            log_norm = torch.logsumexp(logits, dim=1)  # log Σ_a exp(−4 ΔCN_ia²)
            # C6ref(s_i, s_j, nearest reference of i, of j), indexed by each atom's (species, nearest)
            nearest = species * n_ref + logits.argmax(dim=1)
            table = c6_ref.permute(0, 2, 1, 3).reshape(-1)  # (S·R · S·R,)
            c6_near = table.index_select(0, nearest.index_select(0, i) * (n_species * n_ref)
                                         + nearest.index_select(0, j))
            if 2.0 * float(log_norm.detach().max()) < self.log_threshold:  # all pairs fall back (metals)
                return c6_near
            under = (log_norm.index_select(0, i) + log_norm.index_select(0, j)) < self.log_threshold
        w = torch.softmax(logits, dim=1)  # (N, R)
        # (R, N·S): Σ_a w_i^a C6ref(s_i, t, a, b) for each atom i and species t
        u = torch.einsum("na,ntab->bnt", w, c6_ref[species]).reshape(n_ref, -1)
        partner = i * n_species + species.index_select(0, j)
        c6 = (u.index_select(1, partner) * w.T.index_select(1, j)).sum(dim=0)
        if self.grid_fallback:
            c6 = torch.where(under, c6_near, c6)
        return c6

    def frame_energies(self, positions: Tensor, species: Tensor, cell: Tensor, pbc: Tensor) -> Tensor:
        """Per-atom D3 energies (N,) eV of one frame: positions (N, 3) Å, cell (3, 3), pbc (3,)."""
        n_atoms = positions.shape[0]
        reach = max(self.energy_cutoff, self.cn_cutoff)
        i, j, image, shifts, wrap = half_pairs(positions, cell, pbc, reach, self.chunk)
        x = positions - wrap.to(positions.dtype) @ cell
        shift_vec = shifts.to(positions.dtype) @ cell
        vec = x.index_select(0, j) - x.index_select(0, i) + shift_vec.index_select(0, image)
        r = torch.linalg.vector_norm(vec, dim=1)
        cn = self.coordination_numbers(species, i, j, r, n_atoms)
        c6 = self.pair_c6(species, cn, i, j)
        q = self.q.to(r.dtype)
        qq = (q[:, None] * q[None, :]).reshape(-1)  # per pair of species (S·S,)
        r0 = self.a1 * torch.sqrt(3.0 * qq) + self.a2
        r6_damp, r8_damp, c8_ratio = r0**6, r0**8, self.s8 * 3.0 * qq  # c8_ratio: s8 C8/C6
        if qq.shape[0] > 1:  # one species: the (1,) tables broadcast
            pair_type = species.index_select(0, i) * q.shape[0] + species.index_select(0, j)
            r6_damp = r6_damp.index_select(0, pair_type)
            r8_damp = r8_damp.index_select(0, pair_type)
            c8_ratio = c8_ratio.index_select(0, pair_type)
        r2 = r * r
        r6 = r2 * r2 * r2
        pair = c6 * (self.s6 / (r6 + r6_damp) + c8_ratio / (r6 * r2 + r8_damp))
        pair = torch.where(r < self.energy_cutoff, pair, torch.zeros_like(pair))
        energies = torch.zeros(n_atoms, dtype=r.dtype, device=r.device)
        return -0.5 * energies.index_add(0, i, pair).index_add(0, j, pair)
