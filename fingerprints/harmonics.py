"""Real spherical harmonics as polynomials in the unit vector (TorchScript-able evaluation).

Convention: that of ``e3nn.o3.spherical_harmonics(l, u, normalize=True, normalization="norm")``,
i.e. the usual real harmonics without Condon–Shortley phase with the polar axis along y:
in the axes (X, Y, Z) = (z, x, y), for m = -l .. l (index l^2 + l + m)::

    Y_l0 = Q_l^0,   Y_lm = N_lm Q_l^m C_m,   Y_l,-m = N_lm Q_l^m S_m   (m > 0),
    N_lm = sqrt(2 (l - m)! / (l + m)!),

with C_m + i S_m = (X + i Y)^m and Q_l^m the m-th derivative of the Legendre polynomial
P_l written as a homogeneous polynomial of degree l - m (r^2 = x^2 + y^2 + z^2 = 1 on the
unit sphere)::

    Q_m^m = (2m - 1)!!,  Q_{m+1}^m = (2m + 1) Z Q_m^m,
    (l - m) Q_l^m = (2l - 1) Z Q_{l-1}^m - (l + m - 1) r^2 Q_{l-2}^m.

This scaling gives sum_m Y_lm(a) Y_lm(b) = P_l(a . b), so sum_m Y_lm(u)^2 = 1.

Each Y_lm is a polynomial of degree l in u, and on the unit sphere (z^2 = 1 - x^2 - y^2) every
polynomial of degree <= l_max is a combination of the (l_max + 1)^2 monomials x^a y^b z^c with
a + b + c <= l_max and c <= 1 (:func:`monomial_exponents`). So the harmonics are one matrix
product with :func:`harmonic_coefficients` (a square matrix holding the expansion of every Y_lm
on them, worked out once in exact rational arithmetic from the recurrences above; only N_lm is
rounded). :func:`plane_monomials` evaluates the x^a y^b (z = 0) part for all l at once; the
rest is z times its first rows.
"""

import math
from fractions import Fraction
from typing import Dict, List, Tuple

import torch
from torch import Tensor

Exponents = Tuple[int, int, int]
Polynomial = Dict[Exponents, Fraction]

# (X, Y, Z) = (z, x, y) as exponent vectors of (x, y, z)
_X, _Y, _Z = (0, 0, 1), (1, 0, 0), (0, 1, 0)


def monomial_exponents(l_max: int) -> List[Exponents]:
    """Exponents (a, b, c) of the sphere basis, (l_max + 1)^2 of them.

    First x^a y^b by degree 0 .. l_max (degree d: x times every monomial of degree d - 1,
    then y^d), then z times each of those of degree 0 .. l_max - 1. On the unit sphere
    z^2 = 1 - x^2 - y^2, so these span every polynomial of degree <= l_max there.
    """
    layers = [[(0, 0, 0)]]
    for _ in range(l_max):
        layers.append([(a + 1, b, 0) for a, b, _ in layers[-1]] + [(0, len(layers), 0)])
    return [e for layer in layers for e in layer] + [(a, b, 1) for layer in layers[:-1] for a, b, _ in layer]


def plane_monomials(x: Tensor, y: Tensor, l_max: int) -> Tensor:
    """x^a y^b for a + b <= l_max, stacked along dim 1 in the order of :func:`monomial_exponents`.

    x, y: (B, 1, K) each -> (B, (l_max + 1)(l_max + 2) / 2, K). These are the first rows of
    the sphere basis; the others are z times the first (l_max + 1) l_max / 2 of them.
    One product per monomial, each of a lower one and x or y.
    """
    layer: List[Tensor] = [torch.ones_like(x)]
    out: List[Tensor] = [layer[0]]
    for d in range(1, l_max + 1):
        layer = [m * x for m in layer] + [layer[d - 1] * y]
        out += layer
    return torch.cat(out, dim=1)


def _shift(p: Polynomial, e: Exponents, factor: Fraction) -> Polynomial:
    """factor * p * x^e[0] y^e[1] z^e[2]."""
    return {(a + e[0], b + e[1], c + e[2]): factor * v for (a, b, c), v in p.items()}


def _add(*terms: Polynomial) -> Polynomial:
    out: Polynomial = {}
    for p in terms:
        for k, v in p.items():
            out[k] = out.get(k, Fraction(0)) + v
    return out


def _product(p: Polynomial, q: Polynomial) -> Polynomial:
    return _add(*[_shift(q, e, v) for e, v in p.items()])


def _on_sphere(p: Polynomial) -> Polynomial:
    """p with every z^2 replaced by 1 - x^2 - y^2 (equal on the unit sphere; z exponents <= 1)."""
    out: Polynomial = {}
    todo = list(p.items())
    while todo:
        (a, b, c), v = todo.pop()
        if c >= 2:
            todo += [((a, b, c - 2), v), ((a + 2, b, c - 2), -v), ((a, b + 2, c - 2), -v)]
        elif v != 0:
            out[(a, b, c)] = out.get((a, b, c), Fraction(0)) + v
    return out


def _legendre_derivatives(l_max: int) -> Dict[Tuple[int, int], Polynomial]:
    """Q_l^m (module docstring) for 0 <= m <= l <= l_max, keyed by (l, m)."""
    one = Fraction(1)
    q: Dict[Tuple[int, int], Polynomial] = {}
    for m in range(l_max + 1):
        q[(m, m)] = {(0, 0, 0): Fraction(math.prod(range(2 * m - 1, 0, -2)))}
        if m + 1 <= l_max:
            q[(m + 1, m)] = _shift(q[(m, m)], _Z, Fraction(2 * m + 1))
        for l in range(m + 2, l_max + 1):
            r2_term = _add(*[_shift(q[(l - 2, m)], (2 * i, 2 * j, 2 * k), one)
                             for i, j, k in ((1, 0, 0), (0, 1, 0), (0, 0, 1))])
            q[(l, m)] = _add(_shift(q[(l - 1, m)], _Z, Fraction(2 * l - 1, l - m)),
                             _shift(r2_term, (0, 0, 0), Fraction(-(l + m - 1), l - m)))
    return q


def harmonic_coefficients(l_max: int) -> Tensor:
    """Coefficients ((l_max + 1)^2, (l_max + 1)^2) float64 of the harmonics on the monomials:

    Y_lm(u) = sum_k u_x^a_k u_y^b_k u_z^c_k coefficients[k, l^2 + l + m] for unit vectors u,
    with (a_k, b_k, c_k) = ``monomial_exponents(l_max)[k]``.
    """
    q = _legendre_derivatives(l_max)
    cos_m: List[Polynomial] = [{(0, 0, 0): Fraction(1)}]
    sin_m: List[Polynomial] = [{}]
    for _ in range(l_max):  # C_m + i S_m = (X + i Y)(C_{m-1} + i S_{m-1})
        c, s = cos_m[-1], sin_m[-1]
        cos_m.append(_add(_shift(c, _X, Fraction(1)), _shift(s, _Y, Fraction(-1))))
        sin_m.append(_add(_shift(c, _Y, Fraction(1)), _shift(s, _X, Fraction(1))))
    row = {e: k for k, e in enumerate(monomial_exponents(l_max))}
    out = torch.zeros(len(row), (l_max + 1) ** 2, dtype=torch.float64)
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            a = abs(m)
            if m == 0:
                poly, scale = q[(l, 0)], 1.0
            else:
                poly = _product(q[(l, a)], cos_m[a] if m > 0 else sin_m[a])
                scale = math.sqrt(2.0 * math.factorial(l - a) / math.factorial(l + a))
            for e, v in _on_sphere(poly).items():
                out[row[e], l * l + l + m] = scale * float(v)
    return out
