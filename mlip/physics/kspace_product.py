"""The explicit k-space product of the Coulomb engine with hand-written first and second derivatives.

For one periodic frame with atoms at x (n, 3) Å, k vectors k (K, 3) 1/Å (one of each ±k pair),
C charge channels q (n, C) and k-space weights w (C, K) (the engine's 2 G(k), any units):

    P_ic = Σ_k w_ck [cos θ_ik Σ_j q_jc cos θ_jk + sin θ_ik Σ_j q_jc sin θ_jk],   θ = x kᵀ (n, K),

the reciprocal potential times the volume (:meth:`mlip.physics.coulomb.KSpaceSum.kspace_product`).
Training differentiates it twice (forces, then the loss's gradient). Autograd through cos, sin and
the products builds rank-one (n, K) matrices for every derivative and evaluates cos and sin four
times each; on 64-atom NaCl cells at accuracy 1e-6 (K ≈ 4,300) that made the Ewald model train
1.3× slower than the Ewald sum the engine replaced (``benchmarks/RESULTS.md``, long_range). Here
cos θ and sin θ are computed once, without gradient, as one (n, 2K) matrix, and both derivative
orders are closed forms on it: per stage one product of that matrix with all the thin (m, n) or
(m, 2K) factors stacked (the sums are bound by the reads of the (n, 2K) matrix, 4.4 MB for such a
cell), and the second derivative one elementwise (n, 2K) product. Measured on one thread, the
Ewald term's training step (energy, forces with create_graph, the loss's backward) on the 48
cells of ``benchmarks/long_range.py --frames 3 --defects 1``: 10.6–10.8 ms per cell, against
17.9–20.9 ms with autograd through the sum and 12.2–15.0 ms for the Ewald sum before the engine.

With the complex structure factors F_k(v) = Σ_i v_i e^{iθ_ik} of per-atom values v,

    Φ = ⟨g, P⟩ = Σ_ck w_ck Re[F_k(g_c) F_k(q_c)*]       (g (n, C): the cotangent of P)

is symmetric in g and q, and its gradient is the first derivative (:class:`_ProductGrad`):

    ∂Φ/∂q = P(g) (same A),   ∂Φ/∂w_ck = Re[F_k(g_c) F_k(q_c)*],
    ∂Φ/∂θ_ik = Σ_c w_ck [cos θ_ik (g_ic Qs_ck + q_ic Gs_ck) − sin θ_ik (g_ic Qc_ck + q_ic Gc_ck)],
    ∂Φ/∂x = (∂Φ/∂θ) k,   ∂Φ/∂k = (∂Φ/∂θ)ᵀ x,

Qc + i Qs = F(q), Gc + i Gs = F(g). The second derivative is the gradient, in (x, q, k, w, g), of
the directional derivative Ψ = DΦ·h along the cotangents h = (h_x, h_q, h_k, h_w) of these
outputs, where θ moves by H = h_x kᵀ + x h_kᵀ (n, K):

    Ψ = Σ_ck h_w Re[F(g) F(q)*] + w (Re[F(g) F(h_q)*] − Im[F(gH) F(q)*] + Im[F(g) F(qH)*]),

F(vH)_k = Σ_i v_i H_ik e^{iθ_ik} (:meth:`_ProductGrad.backward` writes out its gradient term by
term). Exact to rounding against autograd through the plain product (``tests/test_coulomb_kspace_product.py``,
values, first and second derivatives in every input). Asking for a differentiable second derivative
(``create_graph=True`` on it, the way to a third) raises an error rather than dropping terms.

Eager mode only (``torch.autograd.Function`` is not TorchScript): a scripted engine takes the
plain product, whose derivatives are autograd's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def phase_factors(positions: Tensor, k: Tensor) -> Tensor:
    """[cos θ | sin θ] (n, 2K), θ = x kᵀ, without gradient (the derivatives are the product's)."""
    with torch.no_grad():
        k = k.detach()
        cs = positions.detach() @ torch.cat([k, k]).T
        half = k.shape[0]
        cs[:, :half].cos_()
        cs[:, half:].sin_()
        return cs


def kspace_product(positions: Tensor, charges: Tensor, k: Tensor, weight: Tensor, cs: Tensor) -> Tensor:
    """P (n, C) (module docstring) of ``charges`` (n, C) at ``positions`` (n, 3) Å, k vectors ``k``
    (K, 3) 1/Å, ``weight`` (C, K) and ``cs`` = :func:`phase_factors` (positions, k); differentiable
    twice in positions, charges, k and weight."""
    return _Product.apply(positions, charges, k, weight, cs)


# Every (n, 2K) matrix is read once per stage, with its thin factors stacked: the sums are memory
# bound (a 64-atom cell at 1e-6 has 2K ≈ 8,600 columns, 4.4 MB, beyond the per-core cache).

def _left(cs: Tensor, blocks: list[Tensor]) -> list[Tensor]:
    """Σ_i a_mi [cos θ_ik | sin θ_ik] (m, 2K) of each block ``a`` (m, n), in one product."""
    return list((torch.cat(blocks) @ cs).split([b.shape[0] for b in blocks])) if blocks else []


def _right(cs: Tensor, blocks: list[Tensor]) -> list[Tensor]:
    """Σ_k r_m,k [cos θ_ik | sin θ_ik]_k (m, n) of each block ``r`` (m, 2K), in one product."""
    return list((torch.cat(blocks) @ cs.T).split([b.shape[0] for b in blocks])) if blocks else []


def _cos_sin(u: Tensor, v: Tensor) -> Tensor:
    """Right rows [u | v] (m, 2K): Σ_k (u cos θ + v sin θ)."""
    return torch.cat([u, v], dim=1)


def _along(u: Tensor, v: Tensor, kv: Tensor) -> Tensor:
    """Right rows (3m, 2K) of Σ_k (u_mk cos θ_ik − v_mk sin θ_ik) kv_kd, row (m, d)."""
    return torch.cat([u.unsqueeze(1) * kv.T, -v.unsqueeze(1) * kv.T], dim=2).reshape(-1, 2 * kv.shape[0])


def _times(a: Tensor, xv: Tensor) -> Tensor:
    """Left rows (3m, n): a_mi xv_id, row (m, d)."""
    return (a.unsqueeze(1) * xv.T).reshape(-1, a.shape[1])


def _atom_sum(a: Tensor, along: Tensor) -> Tensor:
    """Σ_m a_mi along_(m, d), i (n, 3) from :func:`_along`'s product."""
    return (a.unsqueeze(1) * along.reshape(a.shape[0], 3, -1)).sum(dim=0).T


def _k_sum(u: Tensor, v: Tensor, times: Tensor) -> Tensor:
    """Σ_m (u_mk F^c − v_mk F^s)_(m, d), k (K, 3) from :func:`_times`' product."""
    half = u.shape[1]
    f = times.reshape(u.shape[0], 3, 2 * half)
    return (u.unsqueeze(1) * f[:, :, :half] - v.unsqueeze(1) * f[:, :, half:]).sum(dim=0).T


class _Product(torch.autograd.Function):
    """P(x, q, k, w) of the module docstring; ``cs`` is a constant of x and k."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, q: Tensor, k: Tensor, w: Tensor, cs: Tensor) -> Tensor:
        (fq,) = _left(cs, [q.T])
        half = k.shape[0]
        qc, qs = fq[:, :half], fq[:, half:]
        ctx.save_for_backward(x, q, k, w, cs, qc, qs)
        return (_cos_sin(w * qc, w * qs) @ cs.T).T

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, q, k, w, cs, qc, qs = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dq, dk, dw = _ProductGrad.apply(x, q, k, w, g, cs, qc, qs, need[0], need[2])
        return (dx if need[0] else None, dq if need[1] else None, dk if need[2] else None,
                dw if need[3] else None, None)


class _ProductGrad(torch.autograd.Function):
    """The first derivative (∂Φ/∂x, ∂Φ/∂q, ∂Φ/∂k, ∂Φ/∂w) of Φ = ⟨g, P⟩, and its derivative.

    ∂Φ/∂θ_ik = Σ_m a_mi (cos θ_ik u_mk − sin θ_ik v_mk) with a = [g; q], u = w [Qs; Gs],
    v = w [Qc; Gc] (channels as rows)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, q: Tensor, k: Tensor, w: Tensor, g: Tensor, cs: Tensor, qc: Tensor,
                qs: Tensor, need_x: bool, need_k: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        half = k.shape[0]
        a = torch.cat([g.T, q.T])
        left = _left(cs, [g.T] + ([_times(a, x)] if need_k else []))
        gc, gs = left[0][:, :half], left[0][:, half:]
        u = torch.cat([w * qs, w * gs])
        v = torch.cat([w * qc, w * gc])
        right = _right(cs, [_cos_sin(w * gc, w * gs)] + ([_along(u, v, k)] if need_x else []))
        dq = right[0].T
        dx = _atom_sum(a, right[1]) if need_x else torch.zeros_like(x)
        dk = _k_sum(u, v, left[1]) if need_k else torch.zeros_like(k)
        dw = gc * qc + gs * qs
        ctx.save_for_backward(x, q, k, w, g, cs, qc, qs, gc, gs)
        return dx, dq, dk, dw

    @staticmethod
    def backward(ctx: Any, hx: Tensor | None, hq: Tensor | None, hk: Tensor | None,
                 hw: Tensor | None) -> tuple[Tensor | None, ...]:
        """The gradient of Ψ = DΦ·h (module docstring) in x, q, k, w and g: with H = h_x kᵀ + x h_kᵀ,
        F(gH) = Rg + i Ig, F(qH) = Rq + i Iq, F(h_q) = Hc + i Hs,

            ∂Ψ/∂θ = θ-form of a = [g; q; h_q], u = [U_g; U_q; w Gs], v = [V_g; V_q; w Gc]
                    − H ⊙ Σ_m a_m (cos θ w [Qc; Gc]_m + sin θ w [Qs; Gs]_m)   (a = [g; q]),
            U_g = h_w Qs + w (Rq + Hs),  V_g = h_w Qc + w (Hc − Iq),
            U_q = h_w Gs + w Rg,         V_q = h_w Gc − w Ig,
            ∂Ψ/∂H = ∂Φ/∂θ,   ∂Ψ/∂x = (∂Ψ/∂θ) k + (∂Ψ/∂H) h_k,   ∂Ψ/∂k = (∂Ψ/∂θ)ᵀ x + (∂Ψ/∂H)ᵀ h_x,
            ∂Ψ/∂g = Σ_k (V_g cos θ + U_g sin θ) + Σ_k H (cos θ w Qs − sin θ w Qc),
            ∂Ψ/∂q = Σ_k (V_q cos θ + U_q sin θ) + Σ_k H (cos θ w Gs − sin θ w Gc),
            ∂Ψ/∂w = Gc Hc + Gs Hs − (Ig Qc − Rg Qs) + (Gs Rq − Gc Iq)."""
        x, q, k, w, g, cs, qc, qs, gc, gs = ctx.saved_tensors
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (x, q, k, w, g, hx, hq, hk, hw)):
            raise RuntimeError("the explicit k-space sum (mlip.physics.kspace_product) has closed-form "
                               "first and second derivatives only, not a differentiable second derivative "
                               "(create_graph=True); a TorchScript-compiled model has any order")
        need = ctx.needs_input_grad
        half = k.shape[0]
        n_c = q.shape[1]
        zero = torch.zeros_like(qc)
        a2 = torch.cat([g.T, q.T])
        hq_t = hq.T if hq is not None else torch.zeros_like(q.T)
        a3 = torch.cat([a2, hq_t])
        hcs: Tensor | None = None
        if hx is not None or hk is not None:  # θ moves by H: H ⊙ [cos θ | sin θ] (n, 2K)
            kk = torch.cat([k, k])
            hcs = hx @ kk.T if hx is not None else torch.zeros_like(cs)
            if hk is not None:
                hcs.addmm_(x, torch.cat([hk, hk]).T)
            hcs.mul_(cs)
        # the structure factors: F(h_q) and the ∂/∂k rows on cs; F(gH), F(qH) and theirs on H ⊙ cs
        left = _left(cs, ([hq.T] if hq is not None else []) + ([_times(a3, x)] if need[2] else [])
                     + ([_times(a2, hx)] if need[2] and hx is not None else []))
        hc = hs = zero
        if hq is not None:
            f = left.pop(0)
            hc, hs = f[:, :half], f[:, half:]
        rg = ig = rq = iq = zero
        left_h: list[Tensor] = []
        if hcs is not None:
            left_h = _left(hcs, [a2] + ([_times(a2, x)] if need[2] else []))
            f = left_h.pop(0)
            rg, ig, rq, iq = f[:n_c, :half], f[:n_c, half:], f[n_c:, :half], f[n_c:, half:]
        hw_ = hw if hw is not None else zero
        u3 = torch.cat([hw_ * qs + w * (rq + hs), hw_ * gs + w * rg, w * gs])
        v3 = torch.cat([hw_ * qc + w * (hc - iq), hw_ * gc - w * ig, w * gc])
        u2 = torch.cat([w * qs, w * gs])  # ∂Φ/∂θ's
        v2 = torch.cat([w * qc, w * gc])
        right = _right(cs, [_cos_sin(v3[:2 * n_c], u3[:2 * n_c])]
                       + ([_along(u3, v3, k)] if need[0] else [])
                       + ([_along(u2, v2, hk)] if need[0] and hk is not None else []))
        grad_gq = right.pop(0).T  # (n, 2C): ∂Ψ/∂g, ∂Ψ/∂q
        grad_x = _atom_sum(a3, right.pop(0)) if need[0] else None
        if need[0] and hk is not None:
            grad_x = grad_x + _atom_sum(a2, right.pop(0))
        grad_k = _k_sum(u3, v3, left.pop(0)) if need[2] else None
        if need[2] and hx is not None:
            grad_k = grad_k + _k_sum(u2, v2, left.pop(0))
        gw = gc * hc + gs * hs - (ig * qc - rg * qs) + (gs * rq - gc * iq)
        if hcs is not None:
            right_h = _right(hcs, [_cos_sin(torch.cat([w * qs, w * gs]), -v2)]
                             + ([_along(-v2, u2, k)] if need[0] else []))
            grad_gq = grad_gq + right_h.pop(0).T
            if need[0]:
                grad_x = grad_x + _atom_sum(a2, right_h.pop(0))
            if need[2]:
                grad_k = grad_k + _k_sum(-v2, u2, left_h.pop(0))
        return (grad_x, grad_gq[:, n_c:] if need[1] else None, grad_k, gw if need[3] else None,
                grad_gq[:, :n_c] if need[4] else None, None, None, None, None, None)
