"""RANN fingerprints (Dickel, Nitol, Barrett): radial, bond, and their MEAM-screened variants.

All lengths in Å. For a centre atom i with neighbours j (edge vectors r_ij):

- radial, one block per neighbour element B, i = o … n (n − o + 1 features, one α_i each):
  ``F_i = Σ_{j∈B} (r_ij/re)^i exp(−α_i r_ij/re) fc(r_ij)``
- bond, one block per neighbour element pair (B, C), m = 0 … M−1, k = 1 … K:
  ``G_{m,k} = Σ_{j∈B} Σ_{l∈C} cos^m θ_jil exp(−α_k (r_ij + r_il)/re) fc(r_ij) fc(r_il)``,
  j = l included. Feature order inside a block: α_k major, m minor (index k·M + m), as RANN.
  Pairs are unordered: (B, C) and (C, B) give the same values (the summand is symmetric),
  so each unordered pair appears once; for B ≠ C the sum runs over j∈B, l∈C only.
  Computed in O(neighbours) through the multinomial expansion
  ``cos^m θ = Σ_{px+py+pz=m} m!/(px! py! pz!) Π_a (u_j,a u_l,a)^{p_a}`` (u = unit vectors), so
  ``G_{m,k} = Σ_p coef_p A_{p,k}^B A_{p,k}^C`` with ``A_{p,k}^B = Σ_{j∈B} u_j^p exp(−α_k r_ij/re) fc``.
- screened variants multiply every pair term by the MEAM screening factor
  ``S_ij = Π_{k≠j} fc_M((C_ikj − Cmin)/(Cmax − Cmin))`` (bond: S_ij S_il), with
  ``X_ik = (r_ik/r_ij)²``, ``X_kj = (r_kj/r_ij)²``,
  ``C = [2(X_ik + X_kj) − (X_ik − X_kj)² − 1] / [1 − (X_ik − X_kj)²]`` and fc_M the MEAM step
  (:func:`fingerprints.cutoffs.meam_shape`). A screener k whose denominator is ≤ 0 (an angle
  ≥ 90° at i or j: k is not between i and j) does not screen (factor 1). Cmin/Cmax may depend
  on the element triple (i, j, k), symmetric in (j, k).

  The product runs over every atom k ≠ j (all periodic images): no screener is dropped at a
  cutoff, so S is smooth. Only k inside the MEAM ellipse (C < Cmax) can screen, and those lie
  within ``r_ij · Cmax / (2 √(Cmax − 1))`` of i (for Cmax > 2; else r_ij), so the module's
  ``cutoff`` is ``rc`` times that factor. (LAMMPS' pair_style rann instead skips screeners
  beyond its largest fingerprint cutoff and removes fully screened neighbours from the list
  of later screeners, which makes S depend on neighbour order; we do neither.)

``fc`` is the RANN/MEAM cutoff :func:`fingerprints.cutoffs.rann_cutoff` with ``rc`` and ``dr``.

RANN parameter files are read by :func:`mlip.interop.rann.read_input`.

Neighbour selection: ``neighbors`` (radial) lists species indices, ``pairs`` (bond) lists
species-index pairs; the index -1 means "all elements" (RANN's ``all``). Defaults: every
element separately (radial) and every unordered element pair (bond).
"""

import math
from itertools import combinations_with_replacement
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fingerprints.cutoffs import meam_shape, rann_cutoff

__all__ = ["RannBond", "RannRadial", "screening_factors", "screening_radius_factor"]

ALL = -1  # neighbour index meaning "every element"
DEFAULT_CMIN = 0.8
DEFAULT_CMAX = 2.8


def screening_radius_factor(cmax: float) -> float:
    """Largest r_ik / r_ij of a screener k inside the MEAM ellipse C < cmax (dimensionless)."""
    return cmax / (2.0 * math.sqrt(cmax - 1.0)) if cmax > 2.0 else 1.0


def _edge_lengths(edge_vec: Tensor) -> Tensor:
    return torch.sqrt((edge_vec * edge_vec).sum(dim=1))


def _triplets(center: Tensor, targets: Tensor, screeners: Tensor, n_centers: int) -> Tuple[Tensor, Tensor]:
    """All (target edge, screener edge) pairs with the same centre and different edges.

    Returns the position of the target in ``targets`` and the screener's edge index.
    """
    sc = center.index_select(0, screeners)
    sc, order = torch.sort(sc, stable=True)
    screeners = screeners.index_select(0, order)
    count = torch.bincount(sc, minlength=n_centers)
    start = torch.cumsum(count, 0) - count
    tc = center.index_select(0, targets)
    n_per = count.index_select(0, tc)
    t_pos = torch.repeat_interleave(torch.arange(targets.shape[0], device=center.device), n_per)
    first = torch.cumsum(n_per, 0) - n_per
    local = torch.arange(t_pos.shape[0], device=center.device) - first.index_select(0, t_pos)
    k_edge = screeners.index_select(0, start.index_select(0, tc).index_select(0, t_pos) + local)
    keep = (targets.index_select(0, t_pos) != k_edge).nonzero().squeeze(1)
    return t_pos.index_select(0, keep), k_edge.index_select(0, keep)


def _ellipse_terms(r2: Tensor, x: Tensor, y: Tensor, z: Tensor, j_edge: Tensor,
                   k_edge: Tensor) -> Tuple[Tensor, Tensor]:
    """Numerator and denominator of MEAM's C for screened bonds i→j and screeners i→k.

    r2: (E,) squared edge lengths; x, y, z: (E,) edge-vector components. With
    X_ik = r_ik²/r_ij², t = r_ij·r_ik / r_ij² and X_kj = X_ik + 1 − 2t, the difference
    d = X_ik − X_kj = 2t − 1, so C = (4 X_ik − 4t + 1 − d²) / (1 − d²).
    """
    rij2 = r2.index_select(0, j_edge)
    dot = x.index_select(0, j_edge) * x.index_select(0, k_edge) \
        + y.index_select(0, j_edge) * y.index_select(0, k_edge) \
        + z.index_select(0, j_edge) * z.index_select(0, k_edge)
    t = dot / rij2
    x_ik = r2.index_select(0, k_edge) / rij2
    d = 2.0 * t - 1.0
    d2 = d * d
    return 4.0 * (x_ik - t) + 1.0 - d2, 1.0 - d2


def screening_factors(species: Tensor, edge_index: Tensor, edge_vec: Tensor, r: Tensor, targets: Tensor,
                      screen_radius: float, cmin: Tensor, cmax: Tensor, n_centers: int) -> Tensor:
    """MEAM screening factor S_ij of the edges ``targets`` (see the module docstring).

    species: (N,) int64; edge_index: (2, E); edge_vec: (E, 3) Å; r: (E,) Å, |edge_vec|;
    targets: (T,) edge indices; screen_radius: Å, screeners are edges with r < screen_radius;
    cmin, cmax: (S, S, S) per element triple (i, j, k). Returns (T,) in [0, 1].
    """
    n_sp = cmin.shape[0]
    center = edge_index[0]
    screeners = (r < screen_radius).nonzero().squeeze(1)
    t_pos, k_edge = _triplets(center, targets, screeners, n_centers)
    j_edge = targets.index_select(0, t_pos)
    triple = (species.index_select(0, center.index_select(0, j_edge)) * n_sp
              + species.index_select(0, edge_index[1].index_select(0, j_edge))) * n_sp \
        + species.index_select(0, edge_index[1].index_select(0, k_edge))
    cmax_t = cmax.reshape(-1).to(edge_vec.dtype).index_select(0, triple)
    x, y, z = edge_vec[:, 0].contiguous(), edge_vec[:, 1].contiguous(), edge_vec[:, 2].contiguous()
    r2 = r * r
    with torch.no_grad():  # keep only screeners inside the ellipse (the others give exactly 1)
        num, denom = _ellipse_terms(r2.detach(), x.detach(), y.detach(), z.detach(), j_edge, k_edge)
        inside = ((denom > 0.0) & (num < cmax_t * denom)).nonzero().squeeze(1)
    t_pos = t_pos.index_select(0, inside)
    j_edge = j_edge.index_select(0, inside)
    k_edge = k_edge.index_select(0, inside)
    lo = cmin.reshape(-1).to(edge_vec.dtype).index_select(0, triple.index_select(0, inside))
    hi = cmax_t.index_select(0, inside)
    num, denom = _ellipse_terms(r2, x, y, z, j_edge, k_edge)
    s = meam_shape((num / denom - lo) / (hi - lo))
    ones = torch.ones(targets.shape[0], dtype=edge_vec.dtype, device=edge_vec.device)
    return ones.scatter_reduce(0, t_pos, s, "prod", include_self=True)


def _screening_table(value: Union[float, Sequence, Tensor], n_species: int, name: str) -> Tensor:
    table = torch.as_tensor(value, dtype=torch.float64)
    if table.dim() == 0:
        table = table.expand(n_species, n_species, n_species).clone()
    if table.shape != (n_species, n_species, n_species):
        shape = tuple(table.shape)
        raise ValueError(f"{name} must be a number or an (n_species,)*3 table, got shape {shape}")
    return table


class _RannBase(torch.nn.Module):
    """Shared constants of the RANN modules: re, rc, dr, species count and screening tables."""

    def __init__(self, n_species: int, re: float, rc: float, dr: float, screened: bool,
                 cmin: Union[float, Sequence, Tensor], cmax: Union[float, Sequence, Tensor]) -> None:
        super().__init__()
        if n_species < 1:
            raise ValueError(f"n_species must be >= 1, got {n_species}")
        for name, value in (("re", re), ("rc", rc), ("dr", dr)):
            if not float(value) > 0.0:
                raise ValueError(f"{name} must be > 0 Å, got {value}")
        self.n_species = int(n_species)
        self.re = float(re)
        self.rc = float(rc)
        self.dr = float(dr)
        self.screened = bool(screened)
        lo = _screening_table(cmin, n_species, "Cmin")
        hi = _screening_table(cmax, n_species, "Cmax")
        if screened and not bool((lo < hi).all()):
            raise ValueError("screening needs Cmin < Cmax for every element triple")
        self.register_buffer("cmin", lo)
        self.register_buffer("cmax", hi)
        self.screen_radius = self.rc * screening_radius_factor(float(hi.max())) if screened else self.rc
        self.cutoff = self.screen_radius

    def _screening_repr(self) -> str:
        if not self.screened:
            return ""
        return (f", screened, Cmin={self.cmin.min().item():g}..{self.cmin.max().item():g}, "
                f"Cmax={self.cmax.min().item():g}..{self.cmax.max().item():g}")


def _species_index(name: Any, elements: Sequence[str], what: str) -> int:
    if name == "all":
        return ALL
    if isinstance(name, int):
        if not 0 <= name < len(elements):
            raise ValueError(f"{what}: species index {name} out of range for elements {list(elements)}")
        return name
    if name not in elements:
        raise ValueError(f"{what}: element {name!r} is not one of {list(elements)}")
    return list(elements).index(name)


def _screening_from_config(params: Dict[str, Any], elements: Sequence[str], what: str) -> None:
    """Turn ``Cmin``/``Cmax`` config values (number or {"A_B_C": value}) into cmin/cmax tables."""
    n = len(elements)
    for key, default in (("Cmin", DEFAULT_CMIN), ("Cmax", DEFAULT_CMAX)):
        value = params.pop(key, default)
        if isinstance(value, Mapping):
            table = torch.full((n, n, n), float(value.get("default", default)), dtype=torch.float64)
            for triple, v in value.items():
                if triple == "default":
                    continue
                names = str(triple).split("_")
                if len(names) != 3:
                    raise ValueError(f"{what}: {key} key {triple!r} must name three elements like 'A_B_C'")
                a, b, c = (_species_index(x, elements, f"{what} {key}") for x in names)
                if ALL in (a, b, c):
                    raise ValueError(f"{what}: {key} key {triple!r} cannot use 'all'")
                table[a, b, c] = table[a, c, b] = float(v)
            value = table
        params[key.lower()] = value


class RannRadial(_RannBase):
    """RANN radial fingerprint (``radial`` / ``radialscreened``); see the module docstring.

    Args:
        n_species: number of elements of the model.
        re: Å, length scale (about the nearest-neighbour distance).
        rc: Å, cutoff; dr: Å, width of the cutoff's fall-off.
        alpha: n − o + 1 decay constants (dimensionless), one per power.
        o, n: lowest and highest power of r/re (o may be negative).
        neighbors: species indices of the neighbour blocks (-1 = all elements); default each element.
        screened: multiply pair terms by the MEAM screening factor.
        cmin, cmax: screening bounds, a number or an (n_species,)*3 table indexed (i, j, k).

    forward: ``(species (N,), edge_index (2, E), edge_vec (E, 3) Å, n_centers) -> (n_centers,
    n_blocks·(n − o + 1))``, block-major.
    """

    cutoff: float
    n_features: int
    screen_radius: float
    re: float
    rc: float
    dr: float
    screened: bool
    has_all: bool

    def __init__(self, n_species: int, re: float, rc: float, dr: float, alpha: Sequence[float], o: int,
                 n: int, neighbors: Optional[Sequence[int]] = None, screened: bool = False,
                 cmin: Union[float, Sequence, Tensor] = DEFAULT_CMIN,
                 cmax: Union[float, Sequence, Tensor] = DEFAULT_CMAX) -> None:
        super().__init__(n_species, re, rc, dr, screened, cmin, cmax)
        if int(n) < int(o):
            raise ValueError(f"RANN radial needs n >= o, got o={o}, n={n}")
        alpha = [float(a) for a in alpha]
        if len(alpha) != int(n) - int(o) + 1:
            expected = int(n) - int(o) + 1
            raise ValueError(f"RANN radial needs n - o + 1 = {expected} alpha values, got {len(alpha)}")
        blocks = list(range(n_species)) if neighbors is None else [int(b) for b in neighbors]
        if not blocks or any(b != ALL and not 0 <= b < n_species for b in blocks):
            raise ValueError(f"neighbors must be species indices in [0, {n_species}) or -1 (all), "
                             f"got {blocks}")
        self.o = int(o)
        self.n = int(n)
        self.neighbors = blocks
        self.has_all = ALL in blocks
        self.register_buffer("blocks", torch.tensor([n_species if b == ALL else b for b in blocks]))
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float64))
        self.register_buffer("powers", torch.arange(self.o, self.n + 1, dtype=torch.float64))
        self.n_features = len(blocks) * len(alpha)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], elements: Sequence[str],
                    screened: bool = False) -> "RannRadial":
        """Build from a config entry; ``neighbors`` are element symbols or ``"all"``."""
        p = dict(params)
        if "neighbors" in p:
            p["neighbors"] = [_species_index(x, elements, "rann_radial neighbors") for x in p["neighbors"]]
        _screening_from_config(p, elements, "rann_radial")
        return cls(n_species=len(elements), screened=screened, **p)

    def extra_repr(self) -> str:
        return (f"re={self.re}, rc={self.rc}, dr={self.dr}, o={self.o}, n={self.n}, "
                f"alpha={self.alpha.tolist()}, neighbors={self.neighbors}, n_features={self.n_features}"
                + self._screening_repr())

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        r_all = _edge_lengths(edge_vec)
        sel = (r_all < self.rc).nonzero().squeeze(1)
        r = r_all.index_select(0, sel)
        weight = rann_cutoff(r, self.rc, self.dr)
        if self.screened:
            weight = weight * screening_factors(species, edge_index, edge_vec, r_all, sel, self.screen_radius,
                                                self.cmin, self.cmax, n_centers)
        x = (r / self.re).unsqueeze(1)
        # (r/re)^i exp(-alpha_i r/re) as one exp (r > 0)
        exponent = torch.log(x) * self.powers.to(edge_vec.dtype) - self.alpha.to(edge_vec.dtype) * x
        terms = torch.exp(exponent) * weight.unsqueeze(1)
        row = edge_index[0].index_select(0, sel) * self.n_species \
            + species.index_select(0, edge_index[1].index_select(0, sel))
        per_species = torch.zeros(n_centers * self.n_species, terms.shape[1], dtype=terms.dtype,
                                  device=terms.device).index_add_(0, row, terms)
        per_species = per_species.view(n_centers, self.n_species, terms.shape[1])
        if self.has_all:
            per_species = torch.cat([per_species, per_species.sum(dim=1, keepdim=True)], dim=1)
        return per_species.index_select(1, self.blocks).reshape(n_centers, self.n_features)


def _pad_by_center(center: Tensor, n_centers: int, a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
    """Rows of ``a`` (e, P) and ``b`` (e, Q) laid out per centre: (n_centers, D, P) and
    (n_centers, D, Q), zero-padded to D = the largest neighbour count."""
    sorted_center, order = torch.sort(center, stable=True)
    count = torch.bincount(center, minlength=n_centers)
    start = torch.cumsum(count, 0) - count
    slot_sorted = torch.arange(center.shape[0], device=center.device) - start.index_select(0, sorted_center)
    slot = torch.empty_like(slot_sorted).index_copy_(0, order, slot_sorted)
    width = int(count.max().item()) if center.shape[0] > 0 else 1
    flat = center * width + slot
    a_pad = torch.zeros(n_centers * width, a.shape[1], dtype=a.dtype, device=a.device).index_copy(0, flat, a)
    b_pad = torch.zeros(n_centers * width, b.shape[1], dtype=b.dtype, device=b.device).index_copy(0, flat, b)
    return a_pad.view(n_centers, width, a.shape[1]), b_pad.view(n_centers, width, b.shape[1])


def _multinomial_table(m_max: int) -> Tuple[List[Tuple[int, int, int]], List[List[float]]]:
    """Exponents (px, py, pz) with px+py+pz < m_max and the (P, m_max) coefficient matrix."""
    exps: List[Tuple[int, int, int]] = []
    coef: List[List[float]] = []
    for m in range(m_max):
        for px in range(m, -1, -1):
            for py in range(m - px, -1, -1):
                pz = m - px - py
                exps.append((px, py, pz))
                row = [0.0] * m_max
                row[m] = math.factorial(m) / (math.factorial(px) * math.factorial(py) * math.factorial(pz))
                coef.append(row)
    return exps, coef


class RannBond(_RannBase):
    """RANN bond (three-body) fingerprint (``bond`` / ``bondscreened``); see the module docstring.

    Args:
        n_species: number of elements of the model.
        re: Å; rc: Å, cutoff; dr: Å, cutoff fall-off width.
        alphak: K decay constants (dimensionless); k: K (checked against ``len(alphak)``).
        m: number of cosine powers (m = 0 … M−1).
        pairs: species-index pairs (B, C) of the neighbour blocks (-1 = all elements);
            default every unordered pair of elements.
        screened, cmin, cmax: as :class:`RannRadial`.

    forward: ``-> (n_centers, n_pairs·K·M)``, pair-major, then α_k, then m.
    """

    cutoff: float
    n_features: int
    screen_radius: float
    re: float
    rc: float
    dr: float
    screened: bool
    has_all: bool
    m: int
    k: int

    def __init__(self, n_species: int, re: float, rc: float, dr: float, alphak: Sequence[float], m: int,
                 k: Optional[int] = None, pairs: Optional[Sequence[Sequence[int]]] = None,
                 screened: bool = False, cmin: Union[float, Sequence, Tensor] = DEFAULT_CMIN,
                 cmax: Union[float, Sequence, Tensor] = DEFAULT_CMAX) -> None:
        super().__init__(n_species, re, rc, dr, screened, cmin, cmax)
        alphak = [float(a) for a in alphak]
        if not alphak or (k is not None and int(k) != len(alphak)):
            raise ValueError(f"RANN bond needs k = len(alphak) >= 1, got k={k}, alphak={alphak}")
        if int(m) < 1:
            raise ValueError(f"RANN bond needs m >= 1 (cosine powers 0 … m-1), got {m}")
        if pairs is None:
            pairs = list(combinations_with_replacement(range(n_species), 2))
        pair_list = [(int(a), int(b)) for a, b in pairs]
        if not pair_list or any(x != ALL and not 0 <= x < n_species for p in pair_list for x in p):
            raise ValueError(f"pairs must hold species indices in [0, {n_species}) or -1 (all), "
                             f"got {pair_list}")
        self.m = int(m)
        self.k = len(alphak)
        self.pairs = pair_list
        self.has_all = any(ALL in p for p in pair_list)
        idx = [[n_species if x == ALL else x for x in p] for p in pair_list]
        self.register_buffer("first", torch.tensor([p[0] for p in idx]))
        self.register_buffer("second", torch.tensor([p[1] for p in idx]))
        self.register_buffer("alphak", torch.tensor(alphak, dtype=torch.float64))
        exps, coef = _multinomial_table(self.m)
        self.register_buffer("exponents", torch.tensor(exps).t().contiguous())  # (3, P)
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float64))  # (P, M)
        self.n_features = len(pair_list) * self.k * self.m

    @classmethod
    def from_config(cls, params: Mapping[str, Any], elements: Sequence[str],
                    screened: bool = False) -> "RannBond":
        """Build from a config entry; ``pairs`` are element-symbol pairs (or ``"all"``)."""
        p = dict(params)
        if "pairs" in p:
            p["pairs"] = [[_species_index(x, elements, "rann_bond pairs") for x in pair]
                          for pair in p["pairs"]]
        _screening_from_config(p, elements, "rann_bond")
        return cls(n_species=len(elements), screened=screened, **p)

    def extra_repr(self) -> str:
        return (f"re={self.re}, rc={self.rc}, dr={self.dr}, m={self.m}, alphak={self.alphak.tolist()}, "
                f"pairs={self.pairs}, n_features={self.n_features}" + self._screening_repr())

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        r_all = _edge_lengths(edge_vec)
        sel = (r_all < self.rc).nonzero().squeeze(1)
        r = r_all.index_select(0, sel)
        weight = rann_cutoff(r, self.rc, self.dr)
        if self.screened:
            weight = weight * screening_factors(species, edge_index, edge_vec, r_all, sel, self.screen_radius,
                                                self.cmin, self.cmax, n_centers)
        u = edge_vec.index_select(0, sel) / r.unsqueeze(1)
        powers = [torch.ones_like(u)]
        for _ in range(1, self.m):
            powers.append(powers[-1] * u)
        upow = torch.stack(powers, dim=1)  # (e, M, 3): u_a^d
        mono = upow[:, :, 0].index_select(1, self.exponents[0]) \
            * upow[:, :, 1].index_select(1, self.exponents[1]) \
            * upow[:, :, 2].index_select(1, self.exponents[2])  # (e, P)
        radial = torch.exp(-self.alphak.to(edge_vec.dtype) * (r / self.re).unsqueeze(1)) * weight.unsqueeze(1)
        # Species-resolved radial part: (e, S*K), zero outside the neighbour's species block.
        radial_s = radial
        if self.n_species > 1:
            nb_species = species.index_select(0, edge_index[1].index_select(0, sel))
            onehot = torch.zeros(r.shape[0], self.n_species, dtype=r.dtype, device=r.device)
            onehot.scatter_(1, nb_species.unsqueeze(1), 1.0)
            radial_s = (onehot.unsqueeze(2) * radial.unsqueeze(1)).reshape(-1, self.n_species * self.k)
        # A[i] = mono_iᵀ radial_i over the neighbours of i, as one batched matrix product.
        mono_pad, radial_pad = _pad_by_center(edge_index[0].index_select(0, sel), n_centers, mono, radial_s)
        dens = torch.bmm(mono_pad.transpose(1, 2), radial_pad)  # (N, P, S*K)
        n_mono = mono.shape[1]
        dens = dens.view(n_centers, n_mono, self.n_species, self.k).transpose(1, 2)  # (N, S, P, K)
        if self.has_all:
            dens = torch.cat([dens, dens.sum(dim=1, keepdim=True)], dim=1)
        prod = dens.index_select(1, self.first) * dens.index_select(1, self.second)  # (N, Q, P, K)
        out = torch.einsum("nqpk,pm->nqkm", prod, self.coef.to(prod.dtype))
        return out.reshape(n_centers, self.n_features)
