"""Cutoff functions: formulas, zero value and gradient beyond rc, smoothness, TorchScript."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fingerprints.cutoffs import (
    CUTOFF_NAMES,
    cosine_cutoff,
    cutoff_by_name,
    meam_shape,
    polynomial_cutoff,
    rann_cutoff,
)

RC, DR = 5.0, 1.5


def plain(name, r):
    if name == "rann":
        x = (RC - r) / DR
        return 1.0 if x >= 1 else 0.0 if x <= 0 else (1 - (1 - x) ** 4) ** 2
    if name == "cos":
        return 0.5 * (math.cos(math.pi * r / RC) + 1) if r < RC else 0.0
    x = r / RC
    return 1 - 10 * x**3 + 15 * x**4 - 6 * x**5 if r < RC else 0.0


@pytest.mark.parametrize("name", CUTOFF_NAMES)
def test_values_and_gradients(name):
    r = torch.linspace(0.01, 7.0, 701, dtype=torch.float64, requires_grad=True)
    f = cutoff_by_name(r, name, RC, DR)
    (g,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), r)
    np.testing.assert_allclose(f.detach().numpy(), [plain(name, x) for x in r.tolist()], atol=1e-14)
    beyond = r.detach() >= RC
    assert torch.isfinite(g).all() and torch.isfinite(g2).all()
    assert (f[beyond] == 0).all() and (g[beyond] == 0).all() and (g2[beyond] == 0).all()
    # central differences of the value reproduce the autograd slope
    h = 1e-6
    x = r.detach()
    fd = (cutoff_by_name(x + h, name, RC, DR) - cutoff_by_name(x - h, name, RC, DR)) / (2 * h)
    np.testing.assert_allclose(g.detach().numpy(), fd.numpy(), atol=1e-7)


@pytest.mark.parametrize("name", CUTOFF_NAMES)
def test_smooth_at_rc(name):
    r = torch.tensor([RC - 1e-5], dtype=torch.float64, requires_grad=True)
    f = cutoff_by_name(r, name, RC, DR)
    (g,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    assert abs(f.item()) < 1e-6 and abs(g.item()) < 1e-3
    if name == "poly":  # second derivative vanishes too
        (g2,) = torch.autograd.grad(g.sum(), r)
        assert abs(g2.item()) < 1e-3


def test_meam_shape_and_functions_script():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(meam_shape(x).numpy(), [0, 0, (1 - 0.5**4) ** 2, 1, 1])
    r = torch.linspace(0, 6, 13, dtype=torch.float64)
    for fn, args in ((rann_cutoff, (RC, DR)), (cosine_cutoff, (RC,)), (polynomial_cutoff, (RC,))):
        assert torch.equal(torch.jit.script(fn)(r, *args), fn(r, *args))
    assert rann_cutoff(r.float(), RC, DR).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown cutoff"):
        cutoff_by_name(r, "gauss", RC, DR)
