"""Behler–Parrinello atom-centred symmetry functions (ACSF), with n2p2's conventions.

Three kinds of symmetry function (SF), named by Behler's G and n2p2's type codes:

- radial, G2 (n2p2 type 2)::

      G2_i = sum_{j != i} exp(-eta (r_ij - rs)^2) fc(r_ij)

- narrow angular, G4 (n2p2 type 3)::

      G4_i = 2^(1 - zeta) sum_{j < k} (1 + lambda cos theta_ijk)^zeta
             exp(-eta [(r_ij - rs)^2 + (r_ik - rs)^2 + (r_jk - rs)^2]) fc(r_ij) fc(r_ik) fc(r_jk)

- wide angular, G5 (n2p2 type 9)::

      G5_i = 2^(1 - zeta) sum_{j < k} (1 + lambda cos theta_ijk)^zeta
             exp(-eta [(r_ij - rs)^2 + (r_ik - rs)^2]) fc(r_ij) fc(r_ik)

Conventions, as n2p2 (``src/libnnp/SymFncExpRad/ExpAngn/ExpAngw``) defines them:

- the angular sums run over *unordered* pairs of neighbours (j < k), i.e. half of
  Behler's sum over j != k; every periodic image is a separate neighbour;
- ``rs`` also shifts the angular Gaussians (n2p2's optional ``<rshift>``,
  default 0, which gives Behler's original G4/G5);
- ``(1 + lambda cos theta)`` is clamped at 0 before the power (n2p2 drops the
  term when it is <= 0);
- an angular SF belongs to a centre element and an unordered pair of neighbour
  elements {e1, e2}: a pair (j, k) counts when {elem j, elem k} = {e1, e2};
  a radial SF belongs to a centre element and one neighbour element;
- every SF has its own cutoff radius ``rc``; the cutoff *type* and its inner
  parameter ``alpha`` are global (n2p2's ``cutoff_type <code> <alpha>``):
  fc(r) = 1 for r < alpha rc, f(x) with x = (r - alpha rc) / (rc - alpha rc)
  up to rc, 0 beyond. Supported types (name or n2p2 code): ``cos`` (1),
  ``tanhu`` (2), ``tanh`` (3), ``exp`` (4), ``poly1`` ... ``poly4`` (5 ... 8).
  ``tanhu``/``tanh`` ignore alpha, as in n2p2.

Per-element SF lists (for importing n2p2 models). n2p2 defines a separate SF
list for each centre element. ``ACSF(functions=[...])`` takes such a list: an
entry with ``"center": e`` belongs only to centre element ``e``, one without a
centre to every element. A centre of element ``e`` gets *its own* list in
columns ``0 .. feature_counts[e] - 1``, in the order the entries were given,
and zeros in the remaining columns up to ``n_features = max(feature_counts)``.
An importer must therefore pass each element's SFs in n2p2's own order (n2p2
sorts them; its ``scaling.data`` and weight files index that sorted order),
convert lengths (``conv_length``: rc, rs times L, eta divided by L^2) and apply
n2p2's SF scaling (``scaling.data``) itself; this module returns the raw,
unscaled G values in Å-based units.

Grid mode (``functions`` omitted) builds the same SF list for every centre
element: one radial block per neighbour element (pairs ``radial_eta[k]``,
``radial_rs[k]``), then one angular block per unordered neighbour-element pair
(a < b in species order), each the product grid ``angular_eta x angular_zeta x
angular_lambda`` with ``angular_rs`` and ``angular_type`` ``"narrow"`` (G4) or
``"wide"`` (G5).
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fingerprints.cutoffs import cosine_cutoff, polynomial_cutoff

# n2p2 cutoff-type codes (CutoffFunction::CutoffType) for the types supported here.
CUTOFF_CODES: Dict[str, int] = {
    "cos": 1, "tanhu": 2, "tanh": 3, "exp": 4, "poly1": 5, "poly2": 6, "poly3": 7, "poly4": 8,
}
# SF type aliases: Behler's names and n2p2's codes -> n2p2 code.
SF_TYPES: Dict[str, int] = {"2": 2, "G2": 2, "3": 3, "G4": 3, "9": 9, "G5": 9}
_ANGULAR_TYPES = {"narrow": 3, "wide": 9}


def n2p2_cutoff(r: Tensor, rc: Tensor, alpha: float, code: int) -> Tensor:
    """n2p2 cutoff function ``fc`` of distances ``r`` (Å) for cutoff radii ``rc`` (Å).

    ``r`` and ``rc`` broadcast against each other (e.g. (E, 1) and (n_rc,)).
    ``alpha`` is the inner-cutoff fraction (0 <= alpha < 1) and ``code`` the n2p2
    cutoff type (see :data:`CUTOFF_CODES`). Values and gradients are finite
    everywhere and exactly 0 for r >= rc.
    """
    if code == 2 or code == 3:
        t = torch.tanh(1.0 - (r / rc).clamp(0.0, 1.0))
        f = t * t * t
        return f / math.tanh(1.0) ** 3 if code == 3 else f
    rci = alpha * rc
    x = ((r - rci) / (rc - rci)).clamp(0.0, 1.0)
    if code == 1:
        return cosine_cutoff(x, 1.0)
    if code == 6:
        return polynomial_cutoff(x, 1.0)
    if code == 5:
        return (2.0 * x - 3.0) * x * x + 1.0
    if code == 7:
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x ** 4 + 1.0
    if code == 8:
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x ** 5 + 1.0
    if code == 4:
        d = 1.0 - x * x
        safe = torch.where(d > 0.0, d, torch.ones_like(d))
        return torch.where(d > 0.0, torch.exp(1.0 - 1.0 / safe), torch.zeros_like(d))
    raise ValueError("unsupported n2p2 cutoff type code " + str(code))


def edge_pairs(center: Tensor, n_centers: int) -> Tuple[Tensor, Tensor]:
    """All unordered pairs of distinct edges that share a centre.

    ``center``: (E,) int64 centre atom of every edge, values < ``n_centers``.
    Returns two (T,) int64 tensors of edge indices (first, second), one entry per
    pair, T = sum_i n_i (n_i - 1) / 2. Fully vectorised (sort + repeat_interleave).
    """
    n_edges = center.shape[0]
    sorted_center, order = torch.sort(center, stable=True)
    counts = torch.bincount(sorted_center, minlength=n_centers)
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(n_edges, device=center.device) - start[sorted_center]
    n_after = counts[sorted_center] - 1 - position
    first = torch.repeat_interleave(torch.arange(n_edges, device=center.device), n_after)
    run_start = torch.cumsum(n_after, 0) - n_after
    second = first + 1 + torch.arange(first.shape[0], device=center.device) - run_start[first]
    return order[first], order[second]


def _parse_function(spec: Mapping[str, Any], index: int, n_species: int, cutoff: float) -> Dict[str, Any]:
    """Validate one entry of ``functions`` and fill its defaults."""
    where = "functions[" + str(index) + "]"
    allowed = {"type", "center", "neighbors", "eta", "rs", "zeta", "lambda", "rc"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    if "type" not in spec or str(spec["type"]) not in SF_TYPES:
        raise ValueError(f"{where}: 'type' must be one of 2/G2, 3/G4, 9/G5, got {spec.get('type')!r}")
    kind = SF_TYPES[str(spec["type"])]
    neighbors = list(spec.get("neighbors", []))
    if len(neighbors) != (1 if kind == 2 else 2):
        raise ValueError(f"{where}: 'neighbors' needs {1 if kind == 2 else 2} species indices, "
                         f"got {neighbors}")
    center = spec.get("center")
    for e in neighbors + ([] if center is None else [center]):
        if not isinstance(e, int) or not 0 <= e < n_species:
            raise ValueError(f"{where}: species index {e!r} is not in 0..{n_species - 1}")
    f = {"type": kind, "center": center, "neighbors": sorted(neighbors),
         "eta": float(spec.get("eta", math.nan)), "rs": float(spec.get("rs", 0.0)),
         "rc": float(spec.get("rc", cutoff)), "zeta": float(spec.get("zeta", 1.0)),
         "lambda": float(spec.get("lambda", 1.0))}
    if not f["eta"] >= 0.0:
        raise ValueError(f"{where}: 'eta' (1/Å²) must be given and >= 0, got {spec.get('eta')!r}")
    if not f["rc"] > 0.0:
        raise ValueError(f"{where}: 'rc' must be > 0 Å, got {f['rc']}")
    if kind != 2 and not f["zeta"] > 0.0:
        raise ValueError(f"{where}: 'zeta' must be > 0, got {f['zeta']}")
    return f


def _grid_functions(n_species: int, cutoff: float, radial_eta: Sequence[float], radial_rs: Sequence[float],
                    angular_eta: Sequence[float], angular_zeta: Sequence[float],
                    angular_lambda: Sequence[float], angular_rs: float, angular_type: str) -> List[Dict]:
    """The grid-mode SF list (shared by all centre elements)."""
    if len(radial_eta) != len(radial_rs):
        raise ValueError(f"radial_eta ({len(radial_eta)} values) and radial_rs ({len(radial_rs)} values) "
                         "must have the same length: they are paired")
    if angular_type not in _ANGULAR_TYPES:
        raise ValueError(f"angular_type must be 'narrow' (G4) or 'wide' (G5), got {angular_type!r}")
    functions: List[Dict] = []
    for b in range(n_species):
        for eta, rs in zip(radial_eta, radial_rs, strict=True):
            functions.append({"type": 2, "neighbors": [b], "eta": eta, "rs": rs, "rc": cutoff})
    for a in range(n_species):
        for b in range(a, n_species):
            for eta in angular_eta:
                for zeta in angular_zeta:
                    for lam in angular_lambda:
                        functions.append({"type": _ANGULAR_TYPES[angular_type], "neighbors": [a, b],
                                          "eta": eta, "zeta": zeta, "lambda": lam, "rs": angular_rs,
                                          "rc": cutoff})
    return functions


class ACSF(torch.nn.Module):
    """Behler–Parrinello symmetry functions G2, G4, G5 (module docstring: formulas, conventions).

    Args:
        n_species: number of elements of the model (species indices 0 .. n_species-1).
        cutoff: Å, default ``rc`` of every SF (grid mode: of all of them).
        radial_eta, radial_rs: grid mode, paired lists (1/Å², Å). Default: 8
            Gaussians with rs evenly spaced from 1 Å to ``cutoff`` and
            eta = 1 / (2 spacing²).
        angular_eta, angular_zeta, angular_lambda: grid mode, product grid
            (1/Å², -, -). Default eta (0.005, 0.05), zeta (1, 4), lambda (-1, 1).
        angular_rs: Å, shift of the angular Gaussians in grid mode (default 0).
        angular_type: ``"narrow"`` (G4, n2p2 type 3) or ``"wide"`` (G5, type 9).
        functions: explicit SF list instead of the grid; each entry a dict with
            ``type`` (2/"G2", 3/"G4", 9/"G5"), ``neighbors`` (list of 1 or 2
            species indices), ``eta`` (1/Å²), optional ``rs`` (Å, default 0),
            ``zeta``, ``lambda`` (angular), ``rc`` (Å, default ``cutoff``) and
            ``center`` (species index; omitted = every centre element).
        cutoff_type: name or n2p2 code (module docstring); default ``"cos"``.
        cutoff_alpha: n2p2 inner-cutoff fraction, 0 <= alpha < 1.

    Attributes: ``cutoff`` (largest rc, Å), ``n_features`` (longest per-element
    list), ``feature_counts`` (SFs per centre element; the rest is zero padding).
    """

    cutoff: float
    n_features: int
    n_species: int
    cutoff_code: int
    cutoff_alpha: float
    feature_counts: List[int]
    n_radial: int
    n_angular: int
    max_angular_rc: float

    def __init__(self, n_species: int, cutoff: float = 6.0,
                 radial_eta: Optional[Sequence[float]] = None, radial_rs: Optional[Sequence[float]] = None,
                 angular_eta: Optional[Sequence[float]] = None,
                 angular_zeta: Optional[Sequence[float]] = None,
                 angular_lambda: Optional[Sequence[float]] = None, angular_rs: float = 0.0,
                 angular_type: str = "narrow", functions: Optional[Sequence[Mapping[str, Any]]] = None,
                 cutoff_type: Union[str, int] = "cos", cutoff_alpha: float = 0.0) -> None:
        super().__init__()
        if n_species < 1:
            raise ValueError(f"n_species must be >= 1, got {n_species}")
        if not cutoff > 0.0:
            raise ValueError(f"cutoff must be > 0 Å, got {cutoff}")
        name = str(cutoff_type)
        code = CUTOFF_CODES[name] if name in CUTOFF_CODES else int(name) if name.isdigit() else -1
        if code not in CUTOFF_CODES.values():
            raise ValueError(f"cutoff_type {cutoff_type!r} is not supported; use one of "
                             f"{sorted(CUTOFF_CODES)} or their n2p2 codes {sorted(CUTOFF_CODES.values())}")
        if not 0.0 <= cutoff_alpha < 1.0:
            raise ValueError(f"cutoff_alpha must satisfy 0 <= alpha < 1, got {cutoff_alpha}")
        grid_args = (radial_eta, radial_rs, angular_eta, angular_zeta, angular_lambda)
        if functions is not None:
            if any(a is not None for a in grid_args):
                raise ValueError("give either 'functions' or the grid parameters (radial_*, angular_*), "
                                 "not both")
        else:
            spacing = (cutoff - 1.0) / 8.0
            functions = _grid_functions(
                n_species, cutoff,
                radial_eta if radial_eta is not None else [1.0 / (2.0 * spacing ** 2)] * 8,
                radial_rs if radial_rs is not None else [1.0 + k * spacing for k in range(8)],
                angular_eta if angular_eta is not None else [0.005, 0.05],
                angular_zeta if angular_zeta is not None else [1.0, 4.0],
                angular_lambda if angular_lambda is not None else [-1.0, 1.0],
                angular_rs, angular_type)
        parsed = [_parse_function(f, i, n_species, cutoff) for i, f in enumerate(functions)]
        if not parsed:
            raise ValueError("ACSF needs at least one symmetry function")

        self.n_species = n_species
        self.cutoff_code = int(code)
        self.cutoff_alpha = float(cutoff_alpha)
        self.cutoff_type_name = [k for k, v in CUTOFF_CODES.items() if v == code][0]
        rc_values = sorted({f["rc"] for f in parsed})
        self.cutoff = float(rc_values[-1])
        self.register_buffer("rc_values", torch.tensor(rc_values, dtype=torch.float64))

        # Column of every SF for every centre element (its position in that element's list).
        columns: List[List[Tuple[int, Dict]]] = []
        for e in range(n_species):
            own = [f for f in parsed if f["center"] is None or f["center"] == e]
            columns.append(list(enumerate(own)))
        self.feature_counts = [len(c) for c in columns]
        self.n_features = max(self.feature_counts)
        self.n_radial = sum(1 for f in parsed if f["type"] == 2)
        self.n_angular = len(parsed) - self.n_radial

        n_pairs = n_species * (n_species + 1) // 2
        pair_index = torch.zeros(n_species, n_species, dtype=torch.int64)
        p = 0
        for a in range(n_species):
            for b in range(a, n_species):
                pair_index[a, b] = pair_index[b, a] = p
                p += 1
        self.register_buffer("pair_index", pair_index)
        # Group tables: radial by (centre, neighbour), angular by (centre, neighbour pair).
        Groups = List[List[List[Tuple[int, Dict]]]]
        radial: Groups = [[[] for _ in range(n_species)] for _ in range(n_species)]
        angular: Groups = [[[] for _ in range(n_pairs)] for _ in range(n_species)]
        for e in range(n_species):
            for col, f in columns[e]:
                if f["type"] == 2:
                    radial[e][f["neighbors"][0]].append((col, f))
                else:
                    a, b = f["neighbors"]
                    angular[e][int(pair_index[a, b])].append((col, f))
        self._register_table("rad", radial, ["eta", "rs"], rc_values)
        self._register_table("ang", angular, ["eta", "rs", "zeta", "lambda", "narrow", "norm"], rc_values)
        self.max_angular_rc = max([f["rc"] for f in parsed if f["type"] != 2], default=0.0)

    def _register_table(self, prefix: str, groups: List[List[List[Tuple[int, Dict]]]], keys: List[str],
                        rc_values: List[float]) -> None:
        """Pad the SF groups into dense (n_species, n_groups, K) buffers ``<prefix>_<key>``.

        Padding entries point at the dummy column ``n_features`` (dropped after the
        scatter) and hold harmless parameters (eta 0, zeta 1, lambda 1).
        """
        n_groups = len(groups[0])
        width = max(1, max(len(g) for row in groups for g in row))
        defaults = {"eta": 0.0, "rs": 0.0, "zeta": 1.0, "lambda": 1.0, "narrow": 0.0, "norm": 0.0}
        values = {k: torch.full((self.n_species, n_groups, width), defaults[k], dtype=torch.float64)
                  for k in keys}
        col = torch.full((self.n_species, n_groups, width), self.n_features, dtype=torch.int64)
        rc_index = torch.zeros((self.n_species, n_groups, width), dtype=torch.int64)
        for e, row in enumerate(groups):
            for g, entries in enumerate(row):
                for k, (c, f) in enumerate(entries):
                    col[e, g, k] = c
                    rc_index[e, g, k] = rc_values.index(f["rc"])
                    for key in keys:
                        if key == "narrow":
                            values[key][e, g, k] = 1.0 if f["type"] == 3 else 0.0
                        elif key == "norm":
                            values[key][e, g, k] = 2.0 ** (1.0 - f["zeta"])
                        else:
                            values[key][e, g, k] = f[key]
        for key, v in values.items():
            self.register_buffer(prefix + "_" + key, v.reshape(self.n_species * n_groups, width))
        self.register_buffer(prefix + "_col", col.reshape(self.n_species * n_groups, width))
        self.register_buffer(prefix + "_rc_index", rc_index.reshape(self.n_species * n_groups, width))

    def extra_repr(self) -> str:
        return (f"n_species={self.n_species}, n_radial={self.n_radial}, n_angular={self.n_angular}, "
                f"n_features={self.n_features}, feature_counts={self.feature_counts}, cutoff={self.cutoff}, "
                f"cutoff_type={self.cutoff_type_name}, cutoff_alpha={self.cutoff_alpha}")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        """Symmetry functions of the first ``n_centers`` atoms.

        species: (N,) int64; edge_index: (2, E) int64 with centres < n_centers;
        edge_vec: (E, 3) Å, r_ij. Returns (n_centers, n_features), dtype of edge_vec.
        """
        dtype = edge_vec.dtype
        n_cols = self.n_features + 1
        out = torch.zeros(n_centers * n_cols, dtype=dtype, device=edge_vec.device)
        r_all = torch.linalg.norm(edge_vec, dim=1)
        keep = r_all < self.cutoff
        center = edge_index[0][keep]
        vec = edge_vec[keep]
        r = r_all[keep]
        s_center = species[center]
        s_neigh = species[edge_index[1][keep]]
        rc = self.rc_values.to(dtype)
        fc = n2p2_cutoff(r.unsqueeze(1), rc, self.cutoff_alpha, self.cutoff_code)  # (E, n_rc)

        # Radial G2: one row of the (centre, neighbour) table per edge.
        g = s_center * self.n_species + s_neigh
        d = r.unsqueeze(1) - self.rad_rs.to(dtype)[g]
        value = torch.exp(-self.rad_eta.to(dtype)[g] * d * d) * torch.gather(fc, 1, self.rad_rc_index[g])
        index = center.unsqueeze(1) * n_cols + self.rad_col[g]
        out.index_add_(0, index.reshape(-1), value.reshape(-1))

        if self.n_angular > 0:
            ang = r < self.max_angular_rc
            ang_edges = torch.nonzero(ang).squeeze(1)
            first, second = edge_pairs(center[ang], n_centers)
            j = ang_edges[first]
            k = ang_edges[second]
            i = center[j]
            n_pairs = self.n_species * (self.n_species + 1) // 2
            g = s_center[j] * n_pairs + self.pair_index[s_neigh[j], s_neigh[k]]
            r_ij = r[j].unsqueeze(1)
            r_ik = r[k].unsqueeze(1)
            r_jk = torch.linalg.norm(vec[k] - vec[j], dim=1).unsqueeze(1)
            cos = (vec[j] * vec[k]).sum(1).unsqueeze(1) / (r_ij * r_ik)
            fc_jk = n2p2_cutoff(r_jk, rc, self.cutoff_alpha, self.cutoff_code)
            rc_index = self.ang_rc_index[g]
            narrow = self.ang_narrow.to(dtype)[g]
            rs = self.ang_rs.to(dtype)[g]
            dij = r_ij - rs
            dik = r_ik - rs
            djk = r_jk - rs
            gauss = torch.exp(-self.ang_eta.to(dtype)[g] * (dij * dij + dik * dik + narrow * djk * djk))
            fc3 = torch.gather(fc[j], 1, rc_index) * torch.gather(fc[k], 1, rc_index)
            fc3 = fc3 * (narrow * torch.gather(fc_jk, 1, rc_index) + 1.0 - narrow)
            base = (1.0 + self.ang_lambda.to(dtype)[g] * cos).clamp(min=0.0)
            value = self.ang_norm.to(dtype)[g] * torch.pow(base, self.ang_zeta.to(dtype)[g]) * gauss * fc3
            index = i.unsqueeze(1) * n_cols + self.ang_col[g]
            out.index_add_(0, index.reshape(-1), value.reshape(-1))
        return out.view(n_centers, n_cols)[:, : self.n_features]
