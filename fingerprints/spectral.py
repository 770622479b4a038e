"""SNAP/SOAP-like spectral descriptors of the neighbour density (e3nn's harmonic conventions).

Every centre atom i gets, per neighbour element z, the density coefficients::

    c^z_{nlm}(i) = sum_{j in z, r_ij < rc} R_n(r_ij) Y_lm(r_ij / |r_ij|)

with ``Y_lm`` the real spherical harmonics in e3nn's convention (equal to
``o3.spherical_harmonics(..., normalization="norm")``, so that sum_m Y_lm(a) Y_lm(b) =
P_l(a . b); evaluated as polynomials by :mod:`fingerprints.harmonics`) and radial
functions ``R_n`` (n = 1 .. n_max) times the quintic cutoff of
``fingerprints.cutoffs.polynomial_cutoff`` (value and first two derivatives
vanish at rc):

- ``"bessel"``: R_n(r) = sqrt(2 / rc) sin(n pi r / rc) / r;
- ``"gaussian"``: R_n(r) = exp(-(r - mu_n)^2 / (2 sigma^2)), mu_n evenly spaced
  on [0, rc], sigma = rc / n_max.

The central atom does not contribute to its own density. Three invariants are
built from it:

- :class:`RadialDensity`: the l = 0 coefficients c^z_{n00} themselves (pair terms).
- :class:`PowerSpectrum` (SOAP-like)::

      p^{z z'}_{n n' l} = sum_m c^z_{nlm} c^{z'}_{n'lm} = sum_{j in z, k in z'} R_n R_n' P_l(cos theta_jik)

  for l = 0 .. l_max and every unordered pair of channels (z, n) <= (z', n');
  the sum over j, k includes j = k (the self term). Invariant under all of O(3).
- :class:`Bispectrum`::

      b^{z1 z2 z3}_{n l1 l2 l3} = sum_{m1 m2 m3} W^{l1 l2 l3}_{m1 m2 m3}
                                  c^{z1}_{n l1 m1} c^{z2}_{n l2 m2} c^{z3}_{n l3 m3}

  with ``W = e3nn.o3.wigner_3j(l1, l2, l3)`` (the real-basis Clebsch–Gordan
  tensor, Frobenius norm 1), diagonal in n as in SNAP, for l1 <= l2 <= l3 <= l_max
  with l3 <= l1 + l2. Element triples are kept once per symmetry class
  ((l1, z1) <= (l2, z2) <= (l3, z3)). The triple sum over neighbours includes
  repeated neighbours (j = k = l). Terms with l1 + l2 + l3 odd are pseudoscalars:
  invariant under proper rotations, sign-flipped by reflections. They are left
  out unless ``include_odd=True``; for l1 + l2 + l3 odd W is antisymmetric under
  exchange of equal l, so combinations with two identical (l, z) slots vanish
  and are dropped.
"""

import math
from typing import List, Tuple

import torch
from e3nn import o3
from torch import Tensor

from fingerprints.cutoffs import polynomial_cutoff
from fingerprints.harmonics import harmonic_coefficients, plane_monomials

RADIAL_BASES = ("bessel", "gaussian")


class DensityExpansion(torch.nn.Module):
    """Element-resolved density coefficients c^z_{nlm} of every centre (module docstring).

    Args:
        n_species: number of elements; cutoff: rc, Å; n_max: radial functions;
        l_max: largest angular momentum; radial_basis: ``"bessel"`` or ``"gaussian"``.

    The neighbours of each centre are laid out densely, (centres, ., width), padded with
    far-away dummy neighbours whose radial functions are exactly 0, so that the sum over
    neighbours is a batched matrix product of the element-resolved radial functions
    (centres, S n_max, width) with the (l_max+1)^2 monomials of the bond directions u that span
    the harmonics on the sphere (:mod:`fingerprints.harmonics`): x^a y^b, and z x^a y^b by
    multiplying z into the radial side instead. The harmonics then follow from one small matrix
    product. No (edges, n_max, (l_max+1)^2) tensor is ever formed, forward or backward, and every
    elementwise operation runs along the contiguous neighbour axis. Centres are taken in order
    of increasing neighbour count, in blocks of about ``block_neighbors`` padded neighbours
    (default 32768), each padded only to its own largest count: bounded temporaries (about 20 %
    faster for 8000 Cu atoms than one block) and little padding where neighbour counts vary
    (surfaces).

    ``n_density`` > 0 also sums, on the same layout, that many Gaussian radial functions
    (the ``"gaussian"`` basis with n_max = n_density) into an l = 0 density
    (:meth:`expand`): the features of a Gaussian :class:`RadialDensity`, for the price of the
    radial functions alone.
    """

    cutoff: float
    n_species: int
    n_max: int
    l_max: int
    gaussian: bool
    n_density: int
    block_neighbors: int

    def __init__(self, n_species: int, cutoff: float, n_max: int, l_max: int,
                 radial_basis: str = "bessel", n_density: int = 0) -> None:
        super().__init__()
        if n_species < 1 or n_max < 1 or l_max < 0 or n_density < 0:
            raise ValueError(f"need n_species >= 1, n_max >= 1, l_max >= 0 and n_density >= 0, got "
                             f"n_species={n_species}, n_max={n_max}, l_max={l_max}, n_density={n_density}")
        if not cutoff > 0.0:
            raise ValueError(f"cutoff must be > 0 Å, got {cutoff}")
        if radial_basis not in RADIAL_BASES:
            raise ValueError(f"radial_basis must be one of {RADIAL_BASES}, got {radial_basis!r}")
        self.cutoff = float(cutoff)
        self.n_species = n_species
        self.n_max = n_max
        self.l_max = l_max
        self.gaussian = radial_basis == "gaussian"
        self.block_neighbors = 32768
        n = torch.arange(1, n_max + 1, dtype=torch.float64)
        if self.gaussian:
            self.register_buffer("radial_parameter", torch.linspace(0.0, cutoff, n_max, dtype=torch.float64))
        else:
            self.register_buffer("radial_parameter", n * math.pi / cutoff)
        self.n_density = n_density
        self.register_buffer("density_centers", torch.linspace(0.0, cutoff, n_density, dtype=torch.float64))
        # derived from l_max alone: kept out of state_dict so older checkpoints still load
        self.register_buffer("harmonic_coefficients", harmonic_coefficients(l_max), persistent=False)
        self.register_buffer("species_range", torch.arange(n_species), persistent=False)

    def radial(self, r: Tensor, fc: Tensor) -> Tensor:
        """Radial functions times the cutoff fc, (B, 1, K) Å -> (B, n_max, K)."""
        p = self.radial_parameter.to(r.dtype).view(1, self.n_max, 1)
        if self.gaussian:
            return _gaussians(r, p, self.cutoff / self.n_max) * fc
        return torch.sin(p * r) * (math.sqrt(2.0 / self.cutoff) * fc / r)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        """Coefficients (n_centers, n_species, n_max, (l_max+1)^2), m fastest within each l block.

        species: (N,) int64; edge_index: (2, E) int64 (centre, neighbour; any order);
        edge_vec: (E, 3) Å, r_ij; centres are 0 .. n_centers - 1.
        """
        return self.expand(species, edge_index, edge_vec, n_centers)[0]

    def expand(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor,
               n_centers: int) -> Tuple[Tensor, Tensor]:
        """:meth:`forward`'s coefficients and the Gaussian radial density (n_centers,
        n_species * n_density), channel z * n_density + (n - 1) (empty for n_density 0)."""
        center = edge_index[0]
        neighbor = edge_index[1]
        outside = torch.linalg.norm(edge_vec, dim=1) >= self.cutoff
        if bool(outside.any()):
            keep = torch.nonzero(~outside).squeeze(1)
            center = center.index_select(0, keep)
            neighbor = neighbor.index_select(0, keep)
            edge_vec = edge_vec.index_select(0, keep)
        n_edges = center.shape[0]
        if n_edges > 1 and bool((center[1:] < center[:-1]).any()):
            center, order = torch.sort(center, stable=True)
            neighbor = neighbor.index_select(0, order)
            edge_vec = edge_vec.index_select(0, order)
        dest, rank, blocks = self._layout(center, n_centers)
        size = blocks[-1][2] + blocks[-1][0] * blocks[-1][1]
        # padding: far-away dummy neighbours at 2 rc (radial functions and derivatives exactly 0)
        padded = torch.zeros(size, 3, dtype=edge_vec.dtype, device=edge_vec.device)
        padded[:, 0] = 2.0 * self.cutoff
        padded = padded.index_copy(0, dest, edge_vec)
        z = torch.zeros(0, dtype=species.dtype, device=species.device)
        if self.n_species > 1:
            z = torch.zeros(size, dtype=species.dtype, device=species.device)
            z = z.index_copy(0, dest, species.index_select(0, neighbor))
        parts: List[Tensor] = []
        densities: List[Tensor] = []
        for block in blocks:
            n_block, width, first = block[0], block[1], block[2]
            vec = padded[first:first + n_block * width].view(n_block, width, 3).transpose(1, 2)
            block_z = z
            if self.n_species > 1:
                block_z = z[first:first + n_block * width].view(n_block, 1, 1, width)
            moments, density = self._moments(vec, block_z)
            parts.append(moments)
            densities.append(density)
        moments = torch.cat(parts, dim=0).index_select(0, rank)
        c = torch.matmul(moments, self.harmonic_coefficients.to(moments.dtype))
        density = torch.cat(densities, dim=0).index_select(0, rank)
        return c.view(n_centers, self.n_species, self.n_max, c.shape[2]), density

    def _layout(self, center: Tensor, n_centers: int) -> Tuple[Tensor, Tensor, List[List[int]]]:
        """Where each edge goes in the padded neighbour layout.

        center: (E,) centre of each edge, grouped by centre. Centres are taken in order of
        increasing neighbour count, in blocks of at most ``block_neighbors`` // (largest count)
        centres, each block padded to its own largest count ``width`` and laid out
        (centres, width) row-major, one block after the other.

        Returns ``dest`` (E,) the padded position of each edge, ``rank`` (n_centers,) the
        position of each centre in that order, and [centres, width, first padded position] of
        every block (at least one block, possibly empty).
        """
        counts = torch.bincount(center, minlength=n_centers)
        first_edge = torch.cumsum(counts, 0) - counts
        slot = torch.arange(center.shape[0], device=center.device) - first_edge.index_select(0, center)
        sorted_counts, by_count = torch.sort(counts, stable=True)
        rank = torch.empty_like(by_count).scatter_(0, by_count, torch.arange(n_centers, device=center.device))
        widest = int(sorted_counts[-1]) if n_centers > 0 else 0
        step = max(1, self.block_neighbors // max(widest, 1))
        blocks: List[List[int]] = []
        first = 0
        for start in range(0, max(n_centers, 1), step):
            n_block = min(step, n_centers - start)
            width = int(sorted_counts[start + n_block - 1]) if n_block > 0 else 0
            blocks.append([n_block, width, first])
            first += n_block * width
        r = rank.index_select(0, center)
        block = torch.div(r, step, rounding_mode="floor")
        firsts = torch.tensor([b[2] for b in blocks], device=center.device).index_select(0, block)
        widths = torch.tensor([b[1] for b in blocks], device=center.device).index_select(0, block)
        return firsts + (r - block * step) * widths + slot, rank, blocks

    def _moments(self, vec: Tensor, z: Tensor) -> Tuple[Tensor, Tensor]:
        """Density moments on the sphere basis of :mod:`fingerprints.harmonics`, and the
        Gaussian radial density.

        vec: (B, 3, width) Å padded bond vectors; z: (B, 1, 1, width) neighbour species (unused
        for one element) -> (B, n_species * n_max, (l_max+1)^2): x^a y^b, then z x^a y^b;
        and (B, n_species * n_density).
        """
        r = torch.linalg.norm(vec, dim=1, keepdim=True)  # (B, 1, width)
        fc = polynomial_cutoff(r, self.cutoff)
        radial = self._by_species(self.radial(r, fc), z)
        density = torch.zeros(vec.shape[0], 0, vec.shape[2], dtype=r.dtype, device=r.device)
        if self.n_density > 0:
            centers = self.density_centers.to(r.dtype).view(1, self.n_density, 1)
            density = self._by_species(_gaussians(r, centers, self.cutoff / self.n_density) * fc, z)
        u = vec / r
        plane = plane_monomials(u[:, 0:1], u[:, 1:2], self.l_max).transpose(1, 2)
        lower = plane[:, :, :self.l_max * (self.l_max + 1) // 2]
        moments = torch.cat([torch.bmm(radial, plane), torch.bmm(radial * u[:, 2:3], lower)], dim=2)
        return moments, density.sum(dim=2)

    def _by_species(self, radial: Tensor, z: Tensor) -> Tensor:
        """(B, n, width) radial functions -> (B, n_species * n, width), zero where the
        neighbour is not of that element (unchanged for one element)."""
        if self.n_species == 1:
            return radial
        one_hot = (z == self.species_range.view(1, self.n_species, 1, 1)).to(radial.dtype)
        return (one_hot * radial.unsqueeze(1)).view(radial.shape[0], self.n_species * radial.shape[1],
                                                    radial.shape[2])


def _gaussians(r: Tensor, centers: Tensor, sigma: float) -> Tensor:
    """exp(-(r - mu)^2 / (2 sigma^2)): r (B, 1, K) Å, centers mu (1, n, 1) Å -> (B, n, K)."""
    return torch.exp(-((r - centers) ** 2) / (2.0 * sigma * sigma))


class RadialDensity(torch.nn.Module):
    """The radial density itself, c^z_{n00} = sum_{j in z} R_n(r_ij) (module docstring; Y_00 = 1).

    Args:
        n_species: number of elements; cutoff: Å; n_max: radial functions (default 6);
        radial_basis: ``"bessel"`` or ``"gaussian"``.

    Features: (n_centers, n_species * n_max), channel a = z * n_max + (n - 1). These are the
    two-body (pair) terms that the power spectrum holds only as products: linear in the
    neighbour density. Next to the power spectrum, with the Gaussian basis and n_max 8, they
    lowered the error of Mo's (211) test surface, whose atoms have fewer neighbours than any
    training atom, from -24 to -16 meV/atom in one run (benchmarks/RESULTS.md, "Mo: the (211)
    surface").
    """

    cutoff: float
    n_features: int

    def __init__(self, n_species: int, cutoff: float = 5.0, n_max: int = 6,
                 radial_basis: str = "bessel") -> None:
        super().__init__()
        self.density = DensityExpansion(n_species, cutoff, n_max, 0, radial_basis)
        self.cutoff = float(cutoff)
        self.n_features = n_species * n_max
        self.radial_basis = radial_basis

    def extra_repr(self) -> str:
        d = self.density
        return (f"n_species={d.n_species}, cutoff={self.cutoff}, n_max={d.n_max}, "
                f"radial_basis={self.radial_basis}, n_features={self.n_features}")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        """Radial density (n_centers, n_features); edge_vec (E, 3) Å, r_ij."""
        return self.density(species, edge_index, edge_vec, n_centers).reshape(n_centers, self.n_features)


class PowerSpectrum(torch.nn.Module):
    """SOAP-like power spectrum p^{z z'}_{n n' l} (module docstring).

    Args:
        n_species: number of elements; cutoff: Å; n_max: radial functions
        (default 8); l_max: default 4; radial_basis: ``"bessel"`` or ``"gaussian"``.

    Features: l-major; within each l the pairs (a, b), a <= b, of channels
    a = z * n_max + (n - 1) in row-major upper-triangle order.
    n_features = (l_max + 1) * A (A + 1) / 2 with A = n_species * n_max.

    ``radial_density`` = K > 0 appends a Gaussian radial density with K functions per element
    (the features of ``RadialDensity(n_max=K, radial_basis="gaussian")``, computed on the power
    spectrum's own neighbour layout) as a second block: ``block_sizes`` = [power spectrum,
    n_species K], each normalised by its own std in a
    :class:`~fingerprints.descriptor_set.DescriptorSet`. Linear in the neighbour density and
    local in r, these features drop less than the quadratic power spectrum at under-coordinated
    atoms and resolve short bonds (Mo's (211) test surface: benchmarks/RESULTS.md).
    """

    cutoff: float
    n_features: int
    l_max: int
    radial_density: int
    block_sizes: List[int]

    def __init__(self, n_species: int, cutoff: float = 5.0, n_max: int = 8, l_max: int = 4,
                 radial_basis: str = "bessel", radial_density: int = 0) -> None:
        super().__init__()
        self.density = DensityExpansion(n_species, cutoff, n_max, l_max, radial_basis, radial_density)
        self.cutoff = float(cutoff)
        self.l_max = l_max
        channels = n_species * n_max
        upper = torch.triu_indices(channels, channels)
        self.register_buffer("pair_flat", upper[0] * channels + upper[1])
        self.radial_density = int(radial_density)
        self.block_sizes = [(l_max + 1) * upper.shape[1]]
        if radial_density > 0:
            self.block_sizes.append(n_species * radial_density)
        self.n_features = sum(self.block_sizes)
        self.radial_basis = radial_basis

    def extra_repr(self) -> str:
        d = self.density
        return (f"n_species={d.n_species}, cutoff={self.cutoff}, n_max={d.n_max}, l_max={self.l_max}, "
                f"radial_basis={self.radial_basis}, radial_density={self.radial_density}, "
                f"n_features={self.n_features}")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        """Power spectrum (n_centers, n_features); edge_vec (E, 3) Å, r_ij."""
        c, density = self.density.expand(species, edge_index, edge_vec, n_centers)
        channels = c.shape[1] * c.shape[2]
        c = c.reshape(n_centers, channels, c.shape[3])
        grams: List[Tensor] = []
        for l in range(self.l_max + 1):
            block = c[:, :, l * l:(l + 1) * (l + 1)]
            grams.append(torch.bmm(block, block.transpose(1, 2)))
        p = torch.stack(grams, dim=1).view(n_centers, self.l_max + 1, channels * channels)
        p = p.index_select(2, self.pair_flat).reshape(n_centers, self.block_sizes[0])
        if self.radial_density > 0:
            p = torch.cat([p, density], dim=1)
        return p


class Bispectrum(torch.nn.Module):
    """Bispectrum b^{z1 z2 z3}_{n l1 l2 l3} contracted with e3nn's wigner_3j (module docstring).

    Args:
        n_species: number of elements; cutoff: Å; n_max: radial functions
        (default 6); l_max: default 4; radial_basis: ``"bessel"`` or
        ``"gaussian"``; include_odd: also keep the l1 + l2 + l3 odd pseudoscalars.

    Features: one block per (l1, l2, l3) in lexicographic order, in it one
    entry per kept element triple (z1, z2, z3) (lexicographic), n fastest.
    ``triples`` lists [l1, l2, l3] per block and ``element_triples`` the kept
    (z1, z2, z3) of each block.
    """

    cutoff: float
    n_features: int
    n_max: int
    blocks: List[List[int]]

    def __init__(self, n_species: int, cutoff: float = 5.0, n_max: int = 6, l_max: int = 4,
                 radial_basis: str = "bessel", include_odd: bool = False) -> None:
        super().__init__()
        self.density = DensityExpansion(n_species, cutoff, n_max, l_max, radial_basis)
        self.cutoff = float(cutoff)
        self.n_max = n_max
        self.radial_basis = radial_basis
        self.include_odd = include_odd
        weights: List[Tensor] = []
        combos: List[int] = []
        self.blocks = []  # [l1, l2, l3, offset into w_flat, offset into combo_flat, number of combos]
        self.triples: List[List[int]] = []
        self.element_triples: List[List[List[int]]] = []
        w_offset = 0
        for l1 in range(l_max + 1):
            for l2 in range(l1, l_max + 1):
                for l3 in range(l2, min(l_max, l1 + l2) + 1):
                    odd = (l1 + l2 + l3) % 2 == 1
                    if odd and not include_odd:
                        continue
                    kept = [[z1, z2, z3] for z1 in range(n_species) for z2 in range(n_species)
                            for z3 in range(n_species)
                            if _canonical(l1, z1, l2, z2, odd) and _canonical(l2, z2, l3, z3, odd)]
                    if not kept:
                        continue
                    w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
                    self.blocks.append([l1, l2, l3, w_offset, len(combos), len(kept)])
                    self.triples.append([l1, l2, l3])
                    self.element_triples.append(kept)
                    weights.append(w.reshape(-1))
                    w_offset += w.numel()
                    combos += [(z1 * n_species + z2) * n_species + z3 for z1, z2, z3 in kept]
        self.register_buffer("w_flat", torch.cat(weights))
        self.register_buffer("combo_flat", torch.tensor(combos, dtype=torch.int64))
        self.n_features = len(combos) * n_max

    def extra_repr(self) -> str:
        d = self.density
        return (f"n_species={d.n_species}, cutoff={self.cutoff}, n_max={self.n_max}, l_max={d.l_max}, "
                f"radial_basis={self.radial_basis}, include_odd={self.include_odd}, "
                f"n_l_triples={len(self.blocks)}, n_features={self.n_features}")

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int) -> Tensor:
        """Bispectrum (n_centers, n_features); edge_vec (E, 3) Å, r_ij."""
        c = self.density(species, edge_index, edge_vec, n_centers)
        n_species = c.shape[1]
        w_flat = self.w_flat.to(c.dtype)
        parts: List[Tensor] = []
        for block in self.blocks:
            l1, l2, l3, w_offset, combo_offset, n_combos = block
            d1, d2, d3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
            w = w_flat[w_offset:w_offset + d1 * d2 * d3].view(d1, d2, d3)
            c1 = c[:, :, :, l1 * l1:(l1 + 1) * (l1 + 1)]
            c2 = c[:, :, :, l2 * l2:(l2 + 1) * (l2 + 1)]
            c3 = c[:, :, :, l3 * l3:(l3 + 1) * (l3 + 1)]
            x = torch.einsum("isna,abc->isnbc", c1, w)
            y = torch.einsum("isnbc,itnb->istnc", x, c2)
            b = torch.einsum("istnc,iunc->istun", y, c3)
            b = b.reshape(n_centers, n_species * n_species * n_species, self.n_max)
            combos = self.combo_flat[combo_offset:combo_offset + n_combos]
            parts.append(b.index_select(1, combos).reshape(n_centers, n_combos * self.n_max))
        return torch.cat(parts, dim=1)


def _canonical(la: int, za: int, lb: int, zb: int, odd: bool) -> bool:
    """Whether slots (la, za), (lb, zb) (la <= lb) are in canonical order for the bispectrum.

    Equal l: the contraction is symmetric (even l-sum) or antisymmetric (odd) in
    the two slots, so keep za <= zb (even) or za < zb (odd; equal slots give 0).
    """
    if la != lb:
        return True
    return za < zb if odd else za <= zb
