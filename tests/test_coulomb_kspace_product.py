"""The explicit k-space product with closed-form derivatives (mlip.physics.kspace_product) and the
Ewald term's training accuracy: values, first and second derivatives exactly those of autograd through
the plain sum (what a TorchScript-compiled engine runs, and what the reference tests check against
LAMMPS and pymatgen); the training sum within its accuracy of the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from physics_reference import with_edges
from test_coulomb import rattled_rocksalt

from mlip.errors import UserError
from mlip.physics.ewald import Ewald
from mlip.physics.kspace_product import kspace_product, phase_factors
from mlip.physics.registry import build_term

KE = 14.399645


def plain_product(x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """P = cos W cosᵀ q + sin W sinᵀ q (n, C) by autograd-traced operations, w (C, K)."""
    phase = x @ k.T
    cos, sin = torch.cos(phase), torch.sin(phase)
    return cos @ (w.T * (cos.T @ q)) + sin @ (w.T * (sin.T @ q))


def closed_form_product(x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return kspace_product(x, q, k, w, phase_factors(x, k))


def derivatives(product, inputs: dict[str, torch.Tensor], needs: str) -> list[torch.Tensor]:
    """P, its first derivatives in the inputs named in ``needs`` for a cotangent that depends on
    them (as ½ q does in the energy), and the second derivatives of a functional of those (one
    that weights every first derivative and squares the position one, as a force loss does)."""
    leaves = {k: v.clone().requires_grad_(k in needs) for k, v in inputs.items()}
    x, q, k, w = leaves["x"], leaves["q"], leaves["k"], leaves["w"]
    p = product(x, q, k, w)
    g = 0.5 * q + 0.1 * torch.sin(x).sum(dim=1, keepdim=True)
    wanted = [leaves[name] for name in needs]
    first = torch.autograd.grad((p * g).sum(), wanted, create_graph=True)
    gen = torch.Generator().manual_seed(7)
    loss = sum((d * torch.randn(d.shape, dtype=d.dtype, generator=gen) + d.square()).sum() for d in first)
    second = torch.autograd.grad(loss, wanted)
    return [p.detach(), *[d.detach() for d in first], *second]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("needs", ["xqkw", "xq", "q", "xqw", "kw"])
def test_closed_forms_equal_autograd_of_the_plain_sum(channels: int, needs: str) -> None:
    """P, ∂(g·P) and the second derivatives (positions, charges, k vectors, weights, and the cotangent
    g through them) agree with autograd to rounding, for any subset of inputs that needs gradients."""
    gen = torch.Generator().manual_seed(channels)
    inputs = {"x": 10.0 * torch.rand(9, 3, dtype=torch.float64, generator=gen),
              "q": torch.randn(9, channels, dtype=torch.float64, generator=gen),
              "k": 2.0 * torch.randn(13, 3, dtype=torch.float64, generator=gen),
              "w": torch.rand(channels, 13, dtype=torch.float64, generator=gen)}
    for ours, reference in zip(derivatives(closed_form_product, inputs, needs),
                               derivatives(plain_product, inputs, needs), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-11, atol=1e-11 * float(reference.abs().max()))


def test_a_third_derivative_is_refused() -> None:
    """A differentiable second derivative raises an error instead of leaving terms out."""
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    q, k, w = torch.ones(4, 1, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), torch.ones(1, 5)
    p = closed_form_product(x, q, k, w.double())
    (g,) = torch.autograd.grad(p.square().sum(), x, create_graph=True)
    torch.autograd.grad(g.square().sum(), x, retain_graph=True)  # second derivatives: fine
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad(g.square().sum(), x, create_graph=True)


def training_step(term: torch.nn.Module, frames: list[tuple[np.ndarray, ...]]) -> list[torch.Tensor]:
    """A training step's quantities for a batch of periodic frames whose charges depend on the
    positions and on a parameter: energies, forces, virials (create_graph) and the gradients of a
    loss on all three in the parameter and the positions (second derivatives)."""
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x0 = torch.from_numpy(np.concatenate([f[1] for f in frames])).requires_grad_(True)
    cell0 = torch.from_numpy(np.stack([f[0] for f in frames]))
    batch = torch.cat([torch.full((len(f[1]),), b) for b, f in enumerate(frames)])
    strain = torch.zeros(len(frames), 3, 3, dtype=torch.float64, requires_grad=True)
    x = x0 + torch.bmm(x0.unsqueeze(1), strain[batch]).squeeze(1)
    cell = cell0 + torch.bmm(cell0, strain)
    data = with_edges({"positions": x, "cell": cell, "pbc": torch.ones(len(frames), 3, dtype=torch.bool),
                       "batch": batch}, 5.0)
    base = torch.from_numpy(np.concatenate([f[2] for f in frames]))
    data["charges"] = scale * base * (1.0 + 0.05 * torch.cos(x).sum(dim=1))
    energy = term(data, len(batch)).sum()
    forces, virial = torch.autograd.grad(energy, [x0, strain], create_graph=True)
    loss = forces.square().sum() + 1e-3 * virial.square().sum() + energy.square()
    d_scale, d_x = torch.autograd.grad(loss, [scale, x0])
    return [energy.detach(), forces.detach(), virial.detach(), d_scale, d_x]


def test_ewald_training_step_equals_the_scripted_term() -> None:
    """The eager Ewald term (closed-form k-space derivatives) and the TorchScript-compiled one
    (autograd through the sum) give the same energies, forces, virials and loss gradients on a
    batch of a triclinic and a charged rock-salt cell."""
    frames = [rattled_rocksalt(11, 0.3), rattled_rocksalt(12, 0.0, net_charge=0.6)]
    term = Ewald(1e-6, "ewald", 5.0)
    ours = training_step(term, frames)
    scripted = training_step(torch.jit.script(Ewald(1e-6, "ewald", 5.0)), frames)
    for a, b in zip(ours, scripted, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))


def test_train_accuracy_applies_in_training_mode_only() -> None:
    """``train_accuracy`` sets the sum of a term in training mode, within its accuracy of the exact
    sum (RMS force error in k_e e²/Å²); eval mode and the exported (scripted, eval) term keep
    ``accuracy``; without the option the state dict has the engine's entries only."""
    frames = [rattled_rocksalt(13, 0.2)]
    term = Ewald(1e-6, "ewald", 5.0, train_accuracy=1e-4)
    trained = training_step(term.train(), frames)
    coarse = training_step(Ewald(1e-4, "ewald", 5.0), frames)
    for a, b in zip(trained, coarse, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    exact = training_step(Ewald(1e-8, "ewald", 5.0), frames)
    deployed = training_step(torch.jit.script(term.eval()), frames)
    fine = training_step(Ewald(1e-6, "ewald", 5.0), frames)
    for a, b in zip(deployed, fine, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    for result, accuracy in ((trained, 1e-4), (deployed, 1e-6)):
        error = float(((result[1] - exact[1]).square().sum(dim=1).mean()).sqrt()) / KE
        assert 0.0 < error < accuracy
    keys = set(Ewald(1e-6, "ewald", 5.0, train_accuracy=1e-6).state_dict())
    assert keys == set(Ewald(1e-6, "ewald", 5.0).state_dict())
    assert all(k.startswith("engine.") for k in keys)


def test_train_accuracy_is_a_config_option() -> None:
    """``model.physics: [{name: ewald, train_accuracy: ...}]`` reaches the term; a value outside
    (0, 1) is a one-line user error naming it."""
    term = build_term({"name": "ewald", "accuracy": 1e-6, "train_accuracy": 1e-5}, ["Na", "Cl"], 5.0)
    assert term.engine.accuracy == 1e-6 and term.train_engine.accuracy == 1e-5
    with pytest.raises(UserError, match="train_accuracy must lie in"):
        build_term({"name": "ewald", "train_accuracy": 0.0}, ["Na", "Cl"], 5.0)
