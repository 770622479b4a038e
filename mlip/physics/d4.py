"""DFT-D4 dispersion (rational damping, EEQ charges, ATM three-body term) as a long-range physics term.

Model (Caldeweyher, Bannwarth, Grimme, J. Chem. Phys. 147, 034112 (2017); Caldeweyher et al.,
J. Chem. Phys. 150, 154122 (2019)), evaluated in atomic units (bohr, Hartree) and returned in eV:

    E = −½ Σ_i Σ'_{j,L; r ≤ cutoff} C6_ij [ s6 / (r⁶ + R0⁶) + s8 3 Q_i Q_j / (r⁸ + R0⁸) ]
        + (1/6) Σ_i Σ'_{(j,L),(k,L'); r_ij, r_ik, r_jk ≤ atm_cutoff} s9 √(C6⁰_ij C6⁰_ik C6⁰_jk)
          (3 cos θ_i cos θ_j cos θ_k + 1) / (r_ij r_ik r_jk)³ · f_ijk,
    f_ijk = 1 / (1 + 6 (R0_ij R0_ik R0_jk / (r_ij r_ik r_jk))^{16/3})
    R0_ij = a1 √(3 Q_i Q_j) + a2,   Q_i = √(½ ⟨r⁴⟩_i/⟨r²⟩_i √Z_i) (tabulated ``r4r2``)

over all periodic images (the sums Σ' skip an atom's own position). E_i is half the pair sum of
atom i plus a third of every ATM triangle it belongs to.

C6 coefficients: C6_ij = Σ_ab w_ia w_jb C6ref(Z_i a, Z_j b), with
C6ref = (3/π) ∫ α_a(iω) α_b(iω) dω (trapezoid rule on the 23 tabulated imaginary frequencies),
computed for the model's elements at construction. The reference polarisabilities are
α_a(iω) = max(0, s_a (α⁰_a(iω) − h_a σ_s α_s(iω) ζ(3, 2 η_s, z_s, q_a^H + z_s))), i.e. the
tabulated reference-molecule polarisability less h_a scaled polarisabilities of its secondary
(hydrogen-like) system s. The weights are

    w_ia = ζ(3, 2 η_i, q_a + z_i, q_i + z_i) · g_ia / Σ_b g_ib,   g_ia = Σ_{k=1}^{n_a} e^{−6 k (CN_i − CN_a)²}
    ζ(g_a, g_c, q_ref, q) = exp(g_a (1 − exp(g_c (1 − q_ref / q))))  (exp(g_a) for q < 0)

with z the effective nuclear charges, η the chemical hardnesses, q_a the reference charges,
q_i the EEQ charges of ``mlip/physics/eeq.py`` (total charge ``data["total_charge"]``, 0 if
absent) and C6⁰ the same with q_i = 0 (the ATM term is charge-independent, as in the reference
program). The Gaussian weights are normalised with a log-sum-exp (softmax), which equals the
reference program's ratio and, where every Gaussian underflows (CN far above all references),
goes smoothly to its fallback (all weight on the highest-CN reference).

Coordination number (D4): CN_i = Σ'_{j,L; r ≤ cn_cutoff} k4 exp(−(|EN_i − EN_j| + k5)² / k6)
· ½ (1 + erf(−7.5 (r − R_ij)/R_ij)), R_ij = Rcov_i + Rcov_j (D3 covalent radii, bohr),
EN Pauling electronegativities, k4 = 4.10451, k5 = 19.08857, k6 = 2 · 11.28174².

Cutoffs (hard, ``r ≤ cutoff``, as in the reference program ``dftd4``): defaults are the reference
program's 60 bohr (31.75 Å) two-body, 40 bohr (21.17 Å) ATM, 30 bohr (15.88 Å) CN and
25 bohr (13.23 Å) EEQ CN. The registry (``--physics d4``) uses shorter two-body/ATM cutoffs
for training cost (``mlip/physics/registry.py``).

Verified against the reference Fortran implementation (``dftd4`` 4.3.1, Python API) for
energies, forces and virials of molecules (every element H..Lr), of the ATM term in orthogonal
and triclinic cells (~1e-12) and of the full term in periodic cells (energy 1e-8; the residual
is dftd4's truncated EEQ Ewald sum, see ``mlip/physics/eeq.py``), and against tad-dftd4 0.8.0
for molecules (``tests/test_d4.py``).

Units: positions are divided by BOHR = 0.529177210903 Å and the energy multiplied by
HARTREE = 27.211386245988 eV (CODATA 2018, the constants of the reference program).

Parameters (``mlip/physics/data/d4_reference.npz``; arrays indexed by atomic number, row 0
unused; Z = 1..103), the published D4 / EEQ reference data of Grimme and co-workers; only the
numbers were extracted, the algorithm here is our own:

- from tad-dftd4 0.8.0 (Apache-2.0, https://github.com/dftd4/tad-dftd4; ``reference/d4/params.py``,
  ``reference/d4/charge_eeq.py``, ``damping/parameters/d4.toml``) and tad-mctc 0.7.0 (Apache-2.0,
  ``data/``): ``ref_cn`` (104, 7) reference CNs, ``ref_ngw`` (104, 7) Gaussians per reference
  (0 = no reference), ``ref_sys`` (104, 7) atomic number of the secondary system,
  ``ref_ascale``/``ref_hcount`` (104, 7), ``ref_alpha`` (104, 7, 23) reference polarisabilities
  (bohr³), ``sec_scale`` (18, 1), ``sec_alpha`` (18, 23), ``ref_q``/``ref_qh`` (104, 7) reference
  charges of the weights / of the secondary systems, ``zeff``, ``hardness`` (Hartree), ``r4r2``,
  ``en`` (119,), and the rational-damping parameters of 117 functionals (``functional_names``,
  ``functional_params`` = s6, s8, s9, a1, a2/bohr, the "bj-eeq-atm" set);
- two corrections towards the reference program dftd4 4.3.1 (its ``src/dftd4/reference.inc``,
  LGPL-3.0-or-later, https://github.com/dftd4/dftd4), each found by comparing C6 with it:
  ``ref_alpha[21, 3]`` (Sc, ScF3) takes its values, which differ from tad-dftd4's in the 7th
  digit; and the placeholder references of U, Am and Cf (reference CN 0, zero polarisability:
  ``ref_ngw`` 0 in tad-dftd4) count in the weight normalisation with 6 Gaussians, as do the
  free-atom references of these elements (the program's rule: n(n+1)/2 Gaussians for n
  references sharing a rounded CN);
- ``rcov`` (119,) Å: 4/3 × the Pyykkö–Atsumi covalent radii (metals −10 %), converted to bohr
  with BOHR below, as the reference program does;
- ``eeq_chi``, ``eeq_eta``, ``eeq_kcn``, ``eeq_rad`` (104,): EEQ 2019 from the reference program's
  multicharge library (Apache-2.0, https://github.com/grimme-lab/multicharge,
  ``src/multicharge/param/eeq2019.f90``); tad-multicharge 0.5.0 carries values that differ in the
  8th digit, which moves charges by ~1e-7.

Cost: the pairs come from the cell list of :mod:`mlip.physics.pairs` (as in D3), once, within
the largest of the cutoffs and the EEQ's ``reach``; the EEQ charges are a conjugate-gradient
charge equilibration on the Coulomb engine (:mod:`mlip.physics.eeq`, no dense matrix); C6 is
still a dense (N, N) matrix, and the ATM term enumerates, per atom, all ordered pairs of its
neighbours within ``atm_cutoff`` (memory ∝ N · (ρ 4π/3 atm_cutoff³)²). One energy + forces +
virial call (registry defaults with a 5 Å ATM cutoff, rattled MgO, 1 thread, shared 2-core
machine): 0.7 s at 216 atoms, 11 s and 3.9 GB peak RSS at 1,728 atoms (17 s and 4.4 GB with the
former dense EEQ solve).

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
from mlip.physics.eeq import CUTOFF as EEQ_CUTOFF
from mlip.physics.eeq import EEQCharges, erf_count
from mlip.physics.pairs import directed_pairs
from parsers.units import BOHR_CODATA2018, HARTREE_CODATA2018

BOHR, HARTREE = BOHR_CODATA2018, HARTREE_CODATA2018  # the reference program's constants
DATA_FILE = Path(__file__).parent / "data" / "d4_reference.npz"
CN_STEEPNESS = 7.5
K4, K5, K6 = 4.10451, 19.08857, 2.0 * 11.28174**2
GA, GC, WF = 3.0, 2.0, 6.0  # charge-scaling height and steepness, CN weighting factor
ATM_EXPONENT = 16.0 / 3.0
MAX_Z = 103
# imaginary frequencies (a.u.) of the tabulated polarisabilities, for the Casimir–Polder integral
FREQUENCIES = np.array([0.000001, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4,
                        1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0])


def _functional_key(name: str) -> str:
    """Functional names compare case-insensitively, ignoring '-' and '_' ("PBE0", "b3-lyp", "wb97x_3c")."""
    return name.lower().replace("-", "").replace("_", "")


def d4_parameters(functional: Optional[str], s6: Optional[float] = None, s8: Optional[float] = None,
                  s9: Optional[float] = None, a1: Optional[float] = None,
                  a2: Optional[float] = None) -> Tuple[float, float, float, float, float]:
    """(s6, s8, s9, a1, a2/bohr) of ``functional`` (D4 "bj-eeq-atm" table), each overridden by an
    explicit value. ``functional=None`` needs s8, a1 and a2 (s6 and s9 default to 1)."""
    if functional is None:
        base: List[Optional[float]] = [1.0, None, 1.0, None, None]
    else:
        with np.load(DATA_FILE) as table:
            names = [str(n) for n in table["functional_names"]]
            values = table["functional_params"]
        keys = [_functional_key(n) for n in names]
        if _functional_key(functional) not in keys:
            raise UserError(f"d4: no parameters for functional {functional!r}; known: {', '.join(names)} "
                            f"(or give s8, a1, a2)")
        base = [float(v) for v in values[keys.index(_functional_key(functional))]]
    chosen = [v if v is not None else b for v, b in zip((s6, s8, s9, a1, a2), base, strict=True)]
    missing = [n for n, v in zip(("s6", "s8", "s9", "a1", "a2"), chosen, strict=True) if v is None]
    if missing:
        raise UserError(f"d4: without a functional, give {', '.join(missing)}")
    s6_, s8_, s9_, a1_, a2_ = (float(v) for v in chosen if v is not None)
    return s6_, s8_, s9_, a1_, a2_


def zeta(height: float, steepness: Tensor, q_ref: Tensor, q: Tensor) -> Tensor:
    """Charge scaling ζ = exp(g_a (1 − exp(g_c (1 − q_ref/q)))), exp(g_a) where q < 0 (shapes broadcast)."""
    positive = q >= 0.0
    safe_q = torch.where(positive, q, torch.ones_like(q))
    scaled = torch.exp(height * (1.0 - torch.exp(steepness * (1.0 - q_ref / safe_q))))
    return torch.where(positive, scaled, torch.full_like(scaled, math.exp(height)))


def reference_c6(z: np.ndarray, table: Dict[str, np.ndarray]) -> np.ndarray:
    """C6ref (S, S, R, R) in Hartree·bohr⁶ for the atomic numbers ``z`` (S,), R = 7 references."""
    sec = table["ref_sys"][z]  # (S, R) atomic number of each reference's secondary system
    sec_z = torch.tensor(table["zeff"][sec])
    sec_scaling = zeta(GA, torch.tensor(table["hardness"][sec] * GC), sec_z,
                       torch.tensor(table["ref_qh"][z]) + sec_z).numpy()
    sec_scaling = np.where(sec > 0, sec_scaling, 0.0)
    secondary = table["sec_scale"][sec] * table["sec_alpha"][sec] * sec_scaling[..., None]  # (S, R, 23)
    alpha = table["ref_alpha"][z] - table["ref_hcount"][z][..., None] * secondary
    alpha = np.maximum(table["ref_ascale"][z][..., None] * alpha, 0.0)
    steps = np.diff(FREQUENCIES)
    weights = 0.5 * (np.concatenate([steps, [0.0]]) + np.concatenate([[0.0], steps]))
    return 3.0 / math.pi * np.einsum("iaw,jbw,w->ijab", alpha, alpha, weights)


class D4Dispersion(PhysicsTerm):
    """DFT-D4 dispersion energy per atom (eV), summed over all periodic images.

    Args:
        elements: the model's element symbols, sorted by atomic number (Z ≤ 103).
        functional: name in the D4 parameter table (default ``"pbe"``: s6 1, s8 0.95948085,
            s9 1, a1 0.38574991, a2 4.80688534 bohr), or None with s8, a1, a2 given.
        s6, s8, s9, a1, a2: explicit parameters (a2 in bohr) overriding the functional's;
            ``s9=0`` switches the ATM term off.
        cutoff: Å, two-body pair cutoff (default 60 bohr). atm_cutoff: Å, ATM cutoff on all three
            sides of a triangle (default 40 bohr). cn_cutoff: Å, D4 CN cutoff (default 30 bohr).
        eeq_cn_cutoff: Å, cutoff of the EEQ charges' CN (default 25 bohr).
        eeq_cutoff: Å, real-space cutoff of the EEQ charges' Ewald sum (default 15 Å; raised to what
            the widest Gaussian of the elements needs, see :mod:`mlip.physics.eeq`).
        max_triangles: ATM triangles per frame beyond which ``forward`` raises (memory guard:
            ~0.4 kB of memory each with forces and stress; a 64-atom MgO cell has 0.84 M
            triangles at an 8 Å ATM cutoff, 3.0 M at 10 Å).

    ``forward(data, n_local)`` reads ``positions`` (N, 3) Å, ``species`` (N,), ``cell`` (B, 3, 3) Å,
    ``pbc`` (B, 3), ``batch`` (N,) and ``total_charge`` (B,) e if present (else neutral frames);
    the atoms ``[:n_local]`` of each frame are the whole periodic system. Returns (n_local,) eV.
    """

    energy_cutoff: float
    atm_cutoff: float
    cn_cutoff: float
    bohr: float
    hartree: float
    cn_steepness: float
    charge_height: float
    atm_exponent: float
    max_triangles: int
    s6: float
    s8: float
    s9: float
    a1: float
    a2: float

    def __init__(self, elements: List[str], functional: Optional[str] = "pbe",
                 s6: Optional[float] = None, s8: Optional[float] = None, s9: Optional[float] = None,
                 a1: Optional[float] = None, a2: Optional[float] = None,
                 cutoff: float = 60.0 * BOHR, atm_cutoff: float = 40.0 * BOHR,
                 cn_cutoff: float = 30.0 * BOHR, eeq_cn_cutoff: float = 25.0 * BOHR,
                 eeq_cutoff: float = EEQ_CUTOFF, max_triangles: int = 10_000_000) -> None:
        super().__init__("d4", cutoff=0.0, long_range=True, needs_charges=False)
        from ase.data import atomic_numbers

        cutoffs = {"cutoff": cutoff, "atm_cutoff": atm_cutoff, "cn_cutoff": cn_cutoff,
                   "eeq_cn_cutoff": eeq_cn_cutoff, "eeq_cutoff": eeq_cutoff}
        bad = [f"{k}={v}" for k, v in cutoffs.items() if not v > 0.0]
        if bad:
            raise UserError(f"d4: cutoffs must be positive, got {', '.join(bad)}")
        unknown = [e for e in elements if e not in atomic_numbers or not 1 <= atomic_numbers[e] <= MAX_Z]
        if unknown:
            raise UserError(f"d4: no D4 reference data for element(s) {', '.join(unknown)} (H..Lr only)")
        self.s6, self.s8, self.s9, self.a1, self.a2 = d4_parameters(functional, s6, s8, s9, a1, a2)
        self.bohr, self.hartree = BOHR, HARTREE
        self.cn_steepness, self.charge_height, self.atm_exponent = CN_STEEPNESS, GA, ATM_EXPONENT
        self.max_triangles = int(max_triangles)
        self.energy_cutoff = float(cutoff) / BOHR
        self.atm_cutoff = float(atm_cutoff) / BOHR
        self.cn_cutoff = float(cn_cutoff) / BOHR

        z = np.array([atomic_numbers[e] for e in elements], dtype=np.int64)
        with np.load(DATA_FILE) as npz:
            table = {k: npz[k] for k in npz.files}
        ngw = table["ref_ngw"][z]
        n_ref = int((ngw > 0).sum(axis=1).max())
        n_gauss = int(ngw.max())

        def f64(a: np.ndarray) -> Tensor:
            return torch.tensor(a, dtype=torch.float64)

        self.register_buffer("c6_ref", f64(reference_c6(z, table)[:, :, :n_ref, :n_ref]))  # (S, S, R, R)
        self.register_buffer("ref_cn", f64(table["ref_cn"][z, :n_ref]))  # (S, R)
        k = np.arange(1, n_gauss + 1)
        # −6k per Gaussian k of each reference, 0 where the reference has fewer Gaussians
        self.register_buffer("gauss_exponent", f64(np.where(k <= ngw[:, :n_ref, None], -WF * k, 0.0)))
        self.register_buffer("gauss_valid", torch.tensor(k <= ngw[:, :n_ref, None]))  # (S, R, G)
        self.register_buffer("ref_q", f64(table["ref_q"][z, :n_ref] + table["zeff"][z, None]))  # q_a + z_i
        self.register_buffer("zeff", f64(table["zeff"][z]))
        self.register_buffer("zeta_steepness", f64(table["hardness"][z] * GC))
        self.register_buffer("r4r2", f64(table["r4r2"][z]))
        self.register_buffer("rcov", f64(table["rcov"][z] / BOHR))
        en_difference = np.abs(table["en"][z][:, None] - table["en"][z][None, :])
        self.register_buffer("cn_prefactor", f64(K4 * np.exp(-((en_difference + K5) ** 2) / K6)))  # (S, S)
        self.eeq = EEQCharges(f64(table["eeq_chi"][z]), f64(table["eeq_eta"][z]), f64(table["eeq_kcn"][z]),
                              f64(table["eeq_rad"][z]), f64(table["rcov"][z] / BOHR),
                              cn_cutoff=eeq_cn_cutoff / BOHR, cutoff=eeq_cutoff)

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        positions = data["positions"]
        local_batch = data["batch"][:n_local]
        n_frames = data["cell"].shape[0]
        if "total_charge" in data:
            total_charge = data["total_charge"]
        else:
            total_charge = torch.zeros(n_frames, dtype=positions.dtype, device=positions.device)
        energies = torch.zeros(n_local, dtype=positions.dtype, device=positions.device)
        for b in range(n_frames):
            idx = (local_batch == b).nonzero().squeeze(1)
            if idx.numel() > 0:
                e = self.frame_energies(positions[idx], data["species"][idx], data["cell"][b], data["pbc"][b],
                                        total_charge[b])
                energies = energies.index_add(0, idx, e)
        return energies

    def coordination_numbers(self, species: Tensor, i: Tensor, j: Tensor, r: Tensor, n_atoms: int) -> Tensor:
        """D4 coordination numbers (n_atoms,) from directed pairs i, j at distances r (bohr)."""
        near = (r <= self.cn_cutoff).nonzero().squeeze(1)
        i, j, r = i[near], j[near], r[near]
        rcov = self.rcov.to(r.dtype)
        count = self.cn_prefactor.to(r.dtype)[species[i], species[j]] * erf_count(
            r, rcov[species[i]] + rcov[species[j]], self.cn_steepness)
        return torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, i, count)

    def reference_weights(self, species: Tensor, cn: Tensor) -> Tensor:
        """Normalised Gaussian CN weights (N, R) of every atom's references (before ζ)."""
        dcn = cn[:, None] - self.ref_cn.to(cn.dtype)[species]  # (N, R)
        logits = self.gauss_exponent.to(cn.dtype)[species] * (dcn * dcn)[:, :, None]  # (N, R, G)
        # a large finite negative (not −inf) keeps logsumexp's gradient finite for absent references,
        # whose softmax weight is then exactly 0
        logits = logits.masked_fill(~self.gauss_valid[species], -1e30)
        return torch.softmax(torch.logsumexp(logits, dim=2), dim=1)

    def c6_matrix(self, species: Tensor, weights: Tensor, q: Tensor) -> Tensor:
        """C6_ij (N, N) Hartree·bohr⁶ from CN weights (N, R) and charges q (N,) e."""
        dtype = weights.dtype
        z = self.zeff.to(dtype)[species]
        steepness = self.zeta_steepness.to(dtype)[species][:, None]
        scale = zeta(self.charge_height, steepness, self.ref_q.to(dtype)[species], (q + z)[:, None])
        w = weights * scale  # (N, R)
        u = torch.einsum("na,ntab->ntb", w, self.c6_ref.to(dtype)[species])  # (N, S, R)
        return torch.einsum("nmb,mb->nm", u[:, species], w)

    def frame_energies(self, positions: Tensor, species: Tensor, cell: Tensor, pbc: Tensor,
                       total_charge: Tensor) -> Tensor:
        """Per-atom D4 energies (N,) eV of one frame: positions (N, 3) Å, cell (3, 3) Å, pbc (3,)."""
        n_atoms = positions.shape[0]
        reach = max(self.energy_cutoff, self.cn_cutoff, self.eeq.reach / self.bohr)
        if self.s9 != 0.0:
            reach = max(reach, self.atm_cutoff)
        i, j, vec = directed_pairs(positions, cell, pbc, reach * self.bohr)
        chi, hardness, widths, system = self.eeq.problem(positions, species, cell, pbc, i, j, vec)
        q = self.eeq.qeq(chi, hardness, widths, total_charge.reshape(1), system)
        if torch.is_grad_enabled():  # differentiable in q only: the EEQ's derivatives come from the adjoint
            q = q + torch.zeros(1, dtype=q.dtype, device=q.device).requires_grad_(True)
        vec = vec / self.bohr
        r = torch.linalg.vector_norm(vec, dim=1)
        cn = self.coordination_numbers(species, i, j, r, n_atoms)
        weights = self.reference_weights(species, cn)
        energies = self.two_body(species, i, j, r, self.c6_matrix(species, weights, q), n_atoms)
        energies = energies + self.eeq.qeq.adjoint_correction(energies, q, chi, hardness, widths, system)
        if self.s9 != 0.0:
            c6_neutral = self.c6_matrix(species, weights, torch.zeros_like(q))
            energies = energies + self.three_body(species, i, j, vec, r, c6_neutral, n_atoms)
        return energies * self.hartree

    def bj_radius(self, species_a: Tensor, species_b: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """(3 Q_a Q_b, R0_ab = a1 √(3 Q_a Q_b) + a2) for pairs of species, bohr²/bohr."""
        r4r2 = self.r4r2.to(dtype)
        qq = 3.0 * r4r2[species_a] * r4r2[species_b]
        return qq, self.a1 * torch.sqrt(qq) + self.a2

    def two_body(self, species: Tensor, i: Tensor, j: Tensor, r: Tensor, c6: Tensor, n_atoms: int) -> Tensor:
        """Rational-damped C6 + C8 energies (N,) Hartree, half of each pair to each atom."""
        near = (r <= self.energy_cutoff).nonzero().squeeze(1)
        i, j, r = i[near], j[near], r[near]
        qq, r0 = self.bj_radius(species[i], species[j], r.dtype)
        r2 = r * r
        r6 = r2 * r2 * r2
        pair = c6[i, j] * (self.s6 / (r6 + r0**6) + self.s8 * qq / (r6 * r2 + r0**8))
        return -0.5 * torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, i, pair)

    def three_body(self, species: Tensor, i: Tensor, j: Tensor, vec: Tensor, r: Tensor, c6: Tensor,
                   n_atoms: int) -> Tensor:
        """Axilrod–Teller–Muto energies (N,) Hartree with zero damping, a third of each triangle per atom.

        Every unordered pair {b, c} of distinct neighbours of a centre a (within ``atm_cutoff``,
        periodic images included) with r_bc ≤ ``atm_cutoff`` is a triangle seen from a; each
        triangle is seen 3 times from the cell's atoms, so a gets 1/3 of each term. Triangles
        are selected per centre without gradient; more than ``max_triangles`` raise an error
        (lower ``atm_cutoff``) instead of exhausting memory in the autograd graph.
        """
        near = (r <= self.atm_cutoff).nonzero().squeeze(1)
        near = near[i[near].argsort()]
        centre, other, v, dist = i[near], j[near], vec[near], r[near]
        counts: List[int] = torch.bincount(centre, minlength=n_atoms).tolist()
        found_first: List[Tensor] = []
        found_second: List[Tensor] = []
        start = 0
        total = 0
        with torch.no_grad():
            for m in counts:
                pairs = torch.triu_indices(m, m, 1, device=r.device) + start
                v_bc = v[pairs[1]].detach() - v[pairs[0]].detach()
                keep = (v_bc.square().sum(dim=1) <= self.atm_cutoff * self.atm_cutoff).nonzero().squeeze(1)
                found_first.append(pairs[0][keep])
                found_second.append(pairs[1][keep])
                total += int(keep.shape[0])
                if total > self.max_triangles:
                    raise RuntimeError("d4: more than " + str(self.max_triangles) + " ATM triangles within "
                                       + "atm_cutoff " + str(self.atm_cutoff * self.bohr)
                                       + " Å; lower atm_cutoff (or set s9=0)")
                start += m
        first = torch.cat(found_first)
        second = torch.cat(found_second)
        a, b, c = centre[first], other[first], other[second]
        r_ab2, r_ac2 = dist[first] ** 2, dist[second] ** 2
        r_bc2 = (v[second] - v[first]).square().sum(dim=1)
        dtype = r.dtype
        _, r0_ab = self.bj_radius(species[a], species[b], dtype)
        _, r0_ac = self.bj_radius(species[a], species[c], dtype)
        _, r0_bc = self.bj_radius(species[b], species[c], dtype)
        product2 = r_ab2 * r_ac2 * r_bc2
        product = torch.sqrt(product2)
        damping = 1.0 / (1.0 + 6.0 * ((r0_ab * r0_ac * r0_bc) / product) ** self.atm_exponent)
        # 3 cos θ_a cos θ_b cos θ_c + 1 over (r_ab r_ac r_bc)³, from squared side lengths
        angular = (0.375 * (r_ab2 + r_bc2 - r_ac2) * (r_ab2 - r_bc2 + r_ac2) * (-r_ab2 + r_bc2 + r_ac2)
                   / (product2 * product2 * product) + 1.0 / (product2 * product))
        c9 = self.s9 * torch.sqrt((c6[a, b] * c6[a, c] * c6[b, c]).abs())
        triangle = c9 * angular * damping
        return torch.zeros(n_atoms, dtype=dtype, device=r.device).index_add(0, a, triangle) / 3.0
