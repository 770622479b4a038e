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
  term when it is <= 0); zeta may be any non-zero number, negative too (as n2p2
  allows; the published 4G AlAuMgO model has zeta -1 and -2);
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


def _integer_power(x: Tensor, n: int) -> Tensor:
    """``x ** n`` for an integer n >= 1 by repeated squaring (much cheaper than ``torch.pow``)."""
    result = x
    power = x
    n -= 1
    while n > 0:
        if n % 2 == 1:
            result = result * power
        n = n // 2
        if n > 0:
            power = power * power
    return result


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
    if kind != 2 and not (math.isfinite(f["zeta"]) and f["zeta"] != 0.0):
        raise ValueError(f"{where}: 'zeta' must be finite and non-zero, got {f['zeta']}")
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

    Cost: O(sum_i n_i^2) for the angular SFs (pairs of neighbours within the
    largest angular rc); per pair, one exp per distinct narrow (eta, rs, rc), one
    power per distinct (lambda, zeta) and one product per SF of the pair's
    (centre element, neighbour pair) group.
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
    rad_groups: List[List[int]]
    ang_groups: List[List[int]]
    ang_zeta: List[float]
    ang_zeta_int: List[int]

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
        self.max_angular_rc = max([f["rc"] for f in parsed if f["type"] != 2], default=0.0)

        n_pairs = n_species * (n_species + 1) // 2
        pair_index = torch.zeros(n_species, n_species, dtype=torch.int64)
        p = 0
        for a in range(n_species):
            for b in range(a, n_species):
                pair_index[a, b] = pair_index[b, a] = p
                p += 1
        self.register_buffer("pair_index", pair_index)

        # SFs grouped by (centre element, neighbour element) and (centre element, neighbour pair);
        # ``*_groups`` rows: [group id, first, last + 1] into the flat parameter buffers.
        radial: Dict[int, List[Tuple[int, Dict]]] = {}
        angular: Dict[int, List[Tuple[int, Dict]]] = {}
        for e in range(n_species):
            for col, f in columns[e]:
                if f["type"] == 2:
                    radial.setdefault(e * n_species + f["neighbors"][0], []).append((col, f))
                else:
                    a, b = f["neighbors"]
                    angular.setdefault(e * n_pairs + int(pair_index[a, b]), []).append((col, f))
        rad_rows, self.rad_groups = self._flatten(radial)
        ang_rows, self.ang_groups = self._flatten(angular)
        self.register_buffer("rad_eta", torch.tensor([f["eta"] for _, f in rad_rows], dtype=torch.float64))
        self.register_buffer("rad_rs", torch.tensor([f["rs"] for _, f in rad_rows], dtype=torch.float64))
        self.register_buffer("rad_fc_index", torch.tensor([rc_values.index(f["rc"]) for _, f in rad_rows],
                                                          dtype=torch.int64))
        self.register_buffer("rad_col", torch.tensor([c for c, _ in rad_rows], dtype=torch.int64))
        # Angular SF = 2^(1-zeta) * sum_pairs E[e(k)] * A[a(k)], with the distinct radial
        # factors E (keyed by type, eta, rs, rc) and angular factors A = (1 + lambda cos)^zeta
        # (keyed by lambda, zeta) of a group computed once per pair of neighbours. E factorises
        # over the legs: E = h(r_ij) h(r_ik) [h(r_jk) if narrow], h(r) = exp(-eta (r - rs)^2) fc(r),
        # so wide SFs need no transcendental function per pair. Narrow keys come first.
        # ang_groups rows: [group id, SF start, SF stop, E start, E stop, narrow E keys,
        # A start, A stop].
        radial_keys: List[Tuple[int, float, float, int]] = []
        angular_keys: List[Tuple[float, float]] = []
        e_of: List[int] = []
        a_of: List[int] = []
        for row in self.ang_groups:
            group = ang_rows[row[1]:row[2]]
            e_key = [(f["type"], f["eta"], f["rs"], rc_values.index(f["rc"])) for _, f in group]
            a_key = [(f["lambda"], f["zeta"]) for _, f in group]
            e_keys = sorted(set(e_key))
            a_keys = sorted(set(a_key))
            e_of += [e_keys.index(key) for key in e_key]
            a_of += [a_keys.index(key) for key in a_key]
            row += [len(radial_keys), len(radial_keys) + len(e_keys), sum(1 for key in e_keys if key[0] == 3),
                    len(angular_keys), len(angular_keys) + len(a_keys)]
            radial_keys += e_keys
            angular_keys += a_keys
        f64 = torch.float64
        self.register_buffer("ang_eta", torch.tensor([key[1] for key in radial_keys], dtype=f64))
        self.register_buffer("ang_rs", torch.tensor([key[2] for key in radial_keys], dtype=f64))
        self.register_buffer("ang_rc_index", torch.tensor([key[3] for key in radial_keys], dtype=torch.int64))
        self.register_buffer("ang_lambda", torch.tensor([key[0] for key in angular_keys], dtype=f64))
        # Integer zeta (1..64) is raised by repeated squaring, others with torch.pow.
        self.ang_zeta = [key[1] for key in angular_keys]
        self.ang_zeta_int = [int(z) if z == int(z) and 1 <= z <= 64 else 0 for z in self.ang_zeta]
        self.register_buffer("ang_e_of", torch.tensor(e_of, dtype=torch.int64))
        self.register_buffer("ang_a_of", torch.tensor(a_of, dtype=torch.int64))
        norm = [2.0 ** (1.0 - f["zeta"]) for _, f in ang_rows]
        self.register_buffer("ang_norm", torch.tensor(norm, dtype=torch.float64))
        self.register_buffer("ang_col", torch.tensor([c for c, _ in ang_rows], dtype=torch.int64))

    @classmethod
    def from_config(cls, params: Mapping[str, Any], elements: Sequence[str]) -> "ACSF":
        """Build from a config dict for the model's element symbols (sorted by atomic number).

        In ``functions``, ``center`` and ``neighbors`` may name elements by symbol
        (``"Cu"``) as well as by species index.
        """
        params = dict(params)
        if params.get("functions") is not None:
            index = {symbol: e for e, symbol in enumerate(elements)}

            def to_index(value: Any, where: str) -> Any:
                if isinstance(value, str):
                    if value not in index:
                        raise ValueError(f"{where}: element {value!r} is not one of the model's "
                                         f"{list(elements)}")
                    return index[value]
                return value

            functions = []
            for n, f in enumerate(params["functions"]):
                f = dict(f)
                where = "functions[" + str(n) + "]"
                if f.get("center") is not None:
                    f["center"] = to_index(f["center"], where)
                f["neighbors"] = [to_index(e, where) for e in f.get("neighbors", [])]
                functions.append(f)
            params["functions"] = functions
        return cls(n_species=len(elements), **params)

    @staticmethod
    def _flatten(groups: Dict[int, List[Tuple[int, Dict]]]) -> Tuple[List[Tuple[int, Dict]], List[List[int]]]:
        """Concatenate the groups' (column, SF) rows; return them and [group id, start, stop] per group."""
        rows: List[Tuple[int, Dict]] = []
        ranges: List[List[int]] = []
        for gid in sorted(groups):
            ranges.append([gid, len(rows), len(rows) + len(groups[gid])])
            rows += groups[gid]
        return rows, ranges

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
        out = torch.zeros(n_centers, self.n_features, dtype=dtype, device=edge_vec.device)
        r_all = torch.linalg.norm(edge_vec, dim=1)
        keep = torch.nonzero(r_all < self.cutoff).squeeze(1)
        center = edge_index[0].index_select(0, keep)
        vec = edge_vec.index_select(0, keep)
        r = r_all.index_select(0, keep)
        s_center = species.index_select(0, center)
        s_neigh = species.index_select(0, edge_index[1].index_select(0, keep))
        rc = self.rc_values.to(dtype)
        fc = n2p2_cutoff(r.unsqueeze(1), rc, self.cutoff_alpha, self.cutoff_code)  # (E, n_rc)

        # Radial G2, one (centre element, neighbour element) group at a time.
        group = s_center * self.n_species + s_neigh
        for gid, start, stop in self.rad_groups:
            sel = torch.nonzero(group == gid).squeeze(1)
            d = r.index_select(0, sel).unsqueeze(1) - self.rad_rs[start:stop].to(dtype)
            value = torch.exp(-self.rad_eta[start:stop].to(dtype) * d * d)
            value = value * fc.index_select(0, sel).index_select(1, self.rad_fc_index[start:stop])
            per_center = torch.zeros(n_centers, stop - start, dtype=dtype, device=out.device)
            per_center = per_center.index_add(0, center.index_select(0, sel), value)
            out = out.index_add(1, self.rad_col[start:stop], per_center)

        if self.n_angular > 0:
            ang_edges = torch.nonzero(r < self.max_angular_rc).squeeze(1)
            first, second = edge_pairs(center.index_select(0, ang_edges), n_centers)
            j = ang_edges.index_select(0, first)
            k = ang_edges.index_select(0, second)
            v_ij = vec.index_select(0, j)
            v_ik = vec.index_select(0, k)
            cos = (v_ij * v_ik).sum(1) / (r.index_select(0, j) * r.index_select(0, k))
            n_pairs = self.n_species * (self.n_species + 1) // 2
            group = s_center.index_select(0, j) * n_pairs + self.pair_index[s_neigh.index_select(0, j),
                                                                            s_neigh.index_select(0, k)]
            i = center.index_select(0, j)
            for gid, start, stop, e_start, e_stop, n_narrow, a_start, a_stop in self.ang_groups:
                sel = torch.nonzero(group == gid).squeeze(1)
                eta = self.ang_eta[e_start:e_stop].to(dtype)
                rs = self.ang_rs[e_start:e_stop].to(dtype)
                rc_index = self.ang_rc_index[e_start:e_stop]
                d = r.unsqueeze(1) - rs
                leg = torch.exp(-eta * d * d) * fc.index_select(1, rc_index)  # h(r) of every edge
                radial_part = leg.index_select(0, j.index_select(0, sel))
                radial_part = radial_part * leg.index_select(0, k.index_select(0, sel))
                if n_narrow > 0:
                    r_jk = torch.linalg.norm(v_ik.index_select(0, sel) - v_ij.index_select(0, sel), dim=1)
                    r_jk = r_jk.unsqueeze(1)
                    d = r_jk - rs[:n_narrow]
                    rc_jk = rc.index_select(0, rc_index[:n_narrow])
                    leg_jk = torch.exp(-eta[:n_narrow] * d * d)
                    leg_jk = leg_jk * n2p2_cutoff(r_jk, rc_jk, self.cutoff_alpha, self.cutoff_code)
                    narrow = radial_part[:, :n_narrow] * leg_jk
                    radial_part = torch.cat([narrow, radial_part[:, n_narrow:]], dim=1)
                base = 1.0 + cos.index_select(0, sel).unsqueeze(1) * self.ang_lambda[a_start:a_stop].to(dtype)
                base = base.clamp(min=0.0)
                powers: List[Tensor] = []
                for a in range(a_start, a_stop):
                    column = base[:, a - a_start]
                    n = self.ang_zeta_int[a]
                    if n > 0:
                        powers.append(_integer_power(column, n))
                    else:  # other zeta, negative ones too (n2p2's published 4G Au SFs): 0 where base <= 0
                        inside = column > 0.0
                        safe = torch.where(inside, column, torch.ones_like(column))
                        power = torch.pow(safe, self.ang_zeta[a])
                        powers.append(torch.where(inside, power, torch.zeros_like(column)))
                angular_part = torch.stack(powers, dim=1)
                value = radial_part.index_select(1, self.ang_e_of[start:stop]) * angular_part.index_select(
                    1, self.ang_a_of[start:stop])
                per_center = torch.zeros(n_centers, stop - start, dtype=dtype, device=out.device)
                per_center = per_center.index_add(0, i.index_select(0, sel), value)
                per_center = per_center * self.ang_norm[start:stop].to(dtype)
                out = out.index_add(1, self.ang_col[start:stop], per_center)
        return out
