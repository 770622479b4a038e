"""Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion, as LAMMPS ``pair_style zbl inner outer``.

For a pair at distance r (Å) with nuclear charges Z_i, Z_j:

    E_ZBL(r) = k_e Z_i Z_j / r · φ(r / a),     a = 0.46850 / (Z_i^0.23 + Z_j^0.23)  Å
    φ(x) = 0.18175 e^{−3.19980 x} + 0.50986 e^{−0.94229 x} + 0.28022 e^{−0.40290 x} + 0.02817 e^{−0.20162 x}

with k_e = 14.399645 eV·Å (LAMMPS metal ``qqr2e``). Between ``inner`` (r₁) and
``outer`` (r_c) the switching function of ``pair_style lj/gromacs`` is added,

    S(r) = C                             r < r₁
    S(r) = A/3 t³ + B/4 t⁴ + C,  t = r − r₁   r₁ ≤ r < r_c

with A, B, C chosen per element pair so that E + S and its first and second
derivatives vanish at r_c (derived here from those three conditions):

    A = (−3 E′ + t_c E″) / t_c²,   B = (2 E′ − t_c E″) / t_c³,   C = −E + t_c E′/2 − t_c² E″/12,

E, E′, E″ being E_ZBL and its derivatives at r_c, t_c = r_c − r₁. The pair
energy is 0 beyond r_c. Each atom gets half of each of its pair energies, as
LAMMPS ``compute pe/atom`` does.
"""

import math
from typing import Dict, List, Sequence, Tuple

import torch
from ase.data import atomic_numbers
from torch import Tensor

from mlip.errors import UserError
from mlip.physics.base import PhysicsTerm
from parsers.units import COULOMB_EV_ANGSTROM

"""k_e = e²/(4πε₀) in eV·Å, the value of LAMMPS ``qqr2e`` in metal units."""

_SCREEN_LENGTH = 0.46850
_SCREEN_POWER = 0.23
_SCREEN_COEFFS = (0.18175, 0.50986, 0.28022, 0.02817)
_SCREEN_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def _zbl_and_derivatives(z_i: float, z_j: float, r: float) -> Tuple[float, float, float]:
    """E_ZBL(r), dE/dr and d²E/dr² (eV, eV/Å, eV/Å²) of one pair, in double precision."""
    a = _SCREEN_LENGTH / (z_i**_SCREEN_POWER + z_j**_SCREEN_POWER)
    pref = COULOMB_EV_ANGSTROM * z_i * z_j
    phi = dphi = d2phi = 0.0
    for c, d in zip(_SCREEN_COEFFS, _SCREEN_EXPONENTS, strict=True):
        b = d / a
        e = c * math.exp(-b * r)
        phi += e
        dphi -= b * e
        d2phi += b * b * e
    # E = pref φ / r
    energy = pref * phi / r
    d1 = pref * (dphi / r - phi / r**2)
    d2 = pref * (d2phi / r - 2.0 * dphi / r**2 + 2.0 * phi / r**3)
    return energy, d1, d2


def _switch_coefficients(z_i: float, z_j: float, inner: float, outer: float) -> Tuple[float, float, float]:
    """A, B, C of the switching function S(r) for one element pair."""
    e, d1, d2 = _zbl_and_derivatives(z_i, z_j, outer)
    tc = outer - inner
    a = (-3.0 * d1 + tc * d2) / tc**2
    b = (2.0 * d1 - tc * d2) / tc**3
    c = -e + 0.5 * tc * d1 - tc**2 * d2 / 12.0
    return a, b, c


def element_numbers(elements: Sequence[str]) -> List[int]:
    """Atomic numbers of chemical symbols; raises :class:`UserError` on an unknown symbol."""
    out = []
    for symbol in elements:
        if symbol not in atomic_numbers or atomic_numbers[symbol] == 0:
            raise UserError(f"unknown chemical element {symbol!r} in the element list {list(elements)}")
        out.append(atomic_numbers[symbol])
    return out


def lammps_pair_style(term: torch.nn.Module, elements: Sequence[str]) -> Tuple[str, List[str]]:
    """The LAMMPS ``pair_style zbl`` that computes what ``term`` (a ZBL, scripted or not) does:
    (sub-style with its arguments, ``pair_coeff`` lines with the atomic numbers of each type pair)
    for ``pair_style hybrid/overlay``, LAMMPS atom types 1.. being ``elements``."""
    z = element_numbers(elements)
    lines = [f"pair_coeff {a + 1} {b + 1} zbl {z[a]} {z[b]}" for a in range(len(z)) for b in range(a, len(z))]
    return f"zbl {term.inner!r} {term.cutoff!r}", lines


class ZBL(PhysicsTerm):
    """ZBL repulsion with LAMMPS ``pair_style zbl inner outer`` switching, per-atom energies in eV.

    Args:
        elements: chemical symbols of the model, sorted by atomic number (``species`` indexes it).
        inner: Å, where the switching function starts.
        outer: Å, cutoff (``self.cutoff``); must exceed ``inner``.

    Reads ``species``, ``edge_index`` and ``edge_vec`` (every directed pair within
    the model cutoff, both directions); each directed edge carries half a pair. The switching
    radii are stored per element pair (buffers ``inner_pair``, ``outer_pair`` (n, n) Å), so
    :class:`mlip.physics.core.RepulsiveCore` switches each pair at its own distances.
    """

    def __init__(self, elements: Sequence[str], inner: float, outer: float) -> None:
        if not 0.0 < inner < outer:
            raise UserError(f"zbl: need 0 < inner < outer, got inner={inner}, outer={outer}")
        super().__init__("zbl", cutoff=outer, long_range=False, needs_charges=False)
        self.z = [float(n) for n in element_numbers(elements)]
        n = len(self.z)
        self.inner = float(inner)
        screen = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(n):
                screen[i, j] = _SCREEN_LENGTH / (self.z[i] ** _SCREEN_POWER + self.z[j] ** _SCREEN_POWER)
        zz = torch.tensor(self.z, dtype=torch.float64)
        self.register_buffer("charge_product", COULOMB_EV_ANGSTROM * zz.unsqueeze(1) * zz.unsqueeze(0))
        self.register_buffer("screen_length", screen)
        self.register_buffer("inner_pair", torch.zeros(n, n, dtype=torch.float64))
        self.register_buffer("outer_pair", torch.zeros(n, n, dtype=torch.float64))
        self.register_buffer("switch", torch.zeros(n, n, 3, dtype=torch.float64))
        self.register_buffer("coeffs", torch.tensor(_SCREEN_COEFFS, dtype=torch.float64))
        self.register_buffer("exponents", torch.tensor(_SCREEN_EXPONENTS, dtype=torch.float64))
        self.set_switching(torch.full((n, n), float(inner), dtype=torch.float64),
                           torch.full((n, n), float(outer), dtype=torch.float64))

    @torch.jit.unused
    def set_switching(self, inner: Tensor, outer: Tensor) -> None:
        """Per element pair switching radii, ``inner`` < ``outer`` (n, n) Å (symmetric), and the
        switching coefficients A, B, C of each pair."""
        n = len(self.z)
        self.inner_pair.copy_(inner.to(torch.float64))
        self.outer_pair.copy_(outer.to(torch.float64))
        for i in range(n):
            for j in range(n):
                coeffs = _switch_coefficients(self.z[i], self.z[j], float(inner[i, j]), float(outer[i, j]))
                self.switch[i, j] = torch.tensor(coeffs, dtype=torch.float64)

    def forward(self, data: Dict[str, Tensor], n_local: int) -> Tensor:
        """Per-atom ZBL energies (n_local,) eV; only the edges within their pair's ``outer``
        are evaluated."""
        species = data["species"]
        edge_index = data["edge_index"]
        edge_vec = data["edge_vec"]
        dtype = edge_vec.dtype
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        si = species[edge_index[0]]
        sj = species[edge_index[1]]
        inside = torch.nonzero(r < self.outer_pair.to(dtype)[si, sj]).squeeze(1)
        r = r.index_select(0, inside)
        si = si.index_select(0, inside)
        sj = sj.index_select(0, inside)
        a = self.screen_length.to(dtype)[si, sj]
        x = r.unsqueeze(1) / a.unsqueeze(1)
        phi = (self.coeffs.to(dtype) * torch.exp(-self.exponents.to(dtype) * x)).sum(dim=1)
        e_pair = self.charge_product.to(dtype)[si, sj] * phi / r
        sw = self.switch.to(dtype)[si, sj]
        t = torch.clamp(r - self.inner_pair.to(dtype)[si, sj], min=0.0)
        e_pair = e_pair + sw[:, 0] / 3.0 * t**3 + sw[:, 1] / 4.0 * t**4 + sw[:, 2]
        out = torch.zeros(n_local, dtype=dtype, device=edge_vec.device)
        return out.index_add(0, edge_index[0].index_select(0, inside), 0.5 * e_pair)
