"""ASE calculator for mlip models: ``model.pt`` files, run directories or in-memory Potentials.

Every evaluation goes through the model's ``compute`` method (exported with ``model.pt``),
which takes the frame's total charge; the deployed ``forward`` has no such input and is
meant for LAMMPS. The total charge of an ``Atoms`` is ``atoms.info.get("charge", 0)`` (e);
it matters only for models with charges.

Neighbour lists come from :func:`fingerprints.neighbors.neighbor_list` and are rebuilt only
when ASE reports that positions, cell, pbc or atomic numbers changed; asking for another
property of the same structure (stress after forces) reuses them.

A committee model (metadata ``committee`` K >= 2, :mod:`mlip.model.committee`) predicts the
members' mean and adds ``energy_deviation`` and ``force_deviation`` to the properties.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from fingerprints.neighbors import neighbor_list
from mlip import keys
from mlip.batching import species_of
from mlip.errors import UserError
from mlip.inference import check_device, committee_size, compute_args, load_model, predict_frames
from mlip.physics.extrapolation import ExtrapolationMonitor
from parsers import Frame

_GEOMETRY_CHANGES = {"positions", "numbers", "cell", "pbc"}
DEVIATION_PROPERTIES = [keys.ENERGY_DEVIATION, keys.FORCE_DEVIATION]


class DeviationWarning(UserWarning):
    """A committee's members disagree on the forces beyond ``deviation_warning``: the structure
    is probably outside the training data."""


class MLIPCalculator(Calculator):
    """ASE calculator for an mlip potential.

    Args:
        model: path of a ``model.pt``, a run directory holding one, or a
            :class:`mlip.model.Potential` (used as given, or scripted when ``jit=True``).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float64"``/``"float32"`` (or a torch dtype); default the model's own dtype.
            Only an in-memory Potential or a non-frozen model file can be converted.
        jit: script an in-memory Potential with ``torch.jit.script`` (same numbers). Off by
            default: on CPU eager autograd is as fast, and TorchScript's profiling executor spends
            about ten slow calls specialising before it reaches full speed.
        deviation_warning: committees only: a threshold (eV/Å) on the largest per-atom force
            deviation; every step (new positions, cell or atoms) at which it is exceeded gives
            one :class:`DeviationWarning` naming the step, the atom and the value. The force
            deviation is then computed at every force evaluation.

    Results (ASE units): ``energy``/``free_energy`` eV, ``energies`` (n,) eV per atom,
    ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³ in Voigt order xx yy zz yz xz xy with ASE's
    sign (positive = tensile), only for fully periodic cells; ``charges`` (n,) e for charge
    models. Only what was computed is stored: energy alone needs no backward pass, and forces
    and stress come from one backward pass. Committees (``implemented_properties`` then lists
    them) also give ``energy_deviation`` (eV/atom, the members' energy standard deviation per
    atom) and ``force_deviation`` (n,) eV/Å, d_i = sqrt(mean_k |F_i^k − F̄_i|²); the latter takes
    one more backward pass through the descriptors per member and is computed when asked for
    (or with ``deviation_warning``).

    Structures outside the training data (a pair closer than the data's shortest distance of
    its elements, descriptors out of the training range) give an
    :class:`~mlip.physics.extrapolation.ExtrapolationWarning` (Python ``warnings``) naming the
    atoms by index, once per pair or atom, at most ten of each kind
    (:mod:`mlip.physics.extrapolation`); models without those metadata are not checked.

    Attributes ``timings`` (seconds of the last calculation: ``neighbors``, ``model``) and
    ``n_neighbor_builds`` let benchmarks and tests see the cost and the reuse of neighbour lists.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model: str | Path | torch.nn.Module, device: str = "cpu",
                 dtype: str | torch.dtype | None = None, jit: bool = False,
                 deviation_warning: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.device = check_device(device)
        self.module, self.metadata = _load(model, self.device, dtype, jit)
        self.dtype = getattr(torch, self.metadata["dtype"])
        self.elements: list[str] = list(self.metadata["elements"])
        self.cutoff = float(self.metadata["cutoff"])
        self.long_range = bool(self.metadata.get("long_range", False))
        self.committee = committee_size(self.metadata)
        extra = ["charges"] if self.metadata.get("charges", False) else []
        extra += DEVIATION_PROPERTIES if self.committee > 1 else []
        if extra:
            self.implemented_properties = [*type(self).implemented_properties, *extra]
        if deviation_warning is not None and self.committee < 2:
            raise UserError(f"deviation_warning={deviation_warning}: this model is not a committee and has "
                            "no force deviation; train one with mlip train --committee 4")
        self.deviation_warning = None if deviation_warning is None else float(deviation_warning)
        self.n_steps = 0  # calculations of a new structure: the steps deviation warnings name
        self._warned_step = False
        self._graph: dict[str, torch.Tensor] | None = None
        self.timings: dict[str, float] = {}
        self.n_neighbor_builds = 0
        self.monitor = ExtrapolationMonitor(self.metadata)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's checks plus the total charge ``atoms.info["charge"]``."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and _total_charge(atoms) != _total_charge(self.atoms):
            changes.append("charge")
        return changes

    def reset(self) -> None:
        super().reset()
        self._graph = None

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_pbc(atoms.pbc)
        t0 = time.perf_counter()
        if self._graph is None or _GEOMETRY_CHANGES.intersection(system_changes):
            self._graph = self._build_graph(atoms)
        t1 = time.perf_counter()
        g = self._graph
        periodic = bool(atoms.pbc.all())
        want_forces = bool({"forces", "stress", keys.FORCE_DEVIATION}.intersection(properties))
        want_virial = "stress" in properties and periodic
        watch = self.deviation_warning is not None
        want_deviation = keys.FORCE_DEVIATION in properties or (watch and want_forces)
        total_charge = torch.tensor([_total_charge(atoms)], dtype=self.dtype, device=self.device)
        res = self.module.compute({**g, "total_charge": total_charge}, want_forces, want_virial, False,
                                  *compute_args(self.metadata, want_deviation))
        energy = float(res["energy"][0].detach())
        self.results = {"energy": energy, "free_energy": energy,
                        "energies": _numpy(res["atomic_energies"])}
        if keys.ENERGY_DEVIATION in res:
            self.results[keys.ENERGY_DEVIATION] = float(res[keys.ENERGY_DEVIATION][0].detach())
        if keys.FORCE_DEVIATION in res:
            self.results[keys.FORCE_DEVIATION] = _numpy(res[keys.FORCE_DEVIATION])
        if want_forces:
            self.results["forces"] = _numpy(res["forces"])
        if want_virial:
            self.results["stress"] = full_3x3_to_voigt_6_stress(_numpy(res["stress"][0]))
        if "charges" in res:
            self.results["charges"] = _numpy(res["charges"])
        if self.monitor.r_min is not None and _GEOMETRY_CHANGES.intersection(system_changes):
            src, dst = g["edge_index"]
            r = torch.linalg.vector_norm(g["positions"][dst] - g["positions"][src] + g["edge_shift"], dim=1)
            self.monitor.check_pairs(g["species"].cpu().numpy(), g["edge_index"].cpu().numpy(), _numpy(r))
        if keys.EXTRAPOLATION in res:
            self.monitor.check_features(_numpy(res[keys.EXTRAPOLATION]))
        if _GEOMETRY_CHANGES.intersection(system_changes):
            self.n_steps += 1
            self._warned_step = False
        if self.deviation_warning is not None and keys.FORCE_DEVIATION in self.results:
            self._check_deviation(self.results[keys.FORCE_DEVIATION])
        self.timings = {"neighbors": t1 - t0, "model": time.perf_counter() - t1}

    def predict(self, structures: Sequence[Atoms], batch_size: int = 16) -> list[dict[str, Any]]:
        """Evaluate many structures, ``batch_size`` at a time in one model call each.

        Returns one dict per structure with ``energy``/``free_energy`` eV, ``energies`` (n,) eV,
        ``forces`` (n, 3) eV/Å, ``stress`` (6,) eV/Å³ (Voigt, ASE sign; fully periodic cells
        only), ``charges`` (n,) e for charge models and ``energy_deviation`` eV/atom for
        committees. Does not touch ``self.results``.
        """
        frames = []
        for k, atoms in enumerate(structures):
            self._check_pbc(atoms.pbc, f"structure {k}: ")
            frames.append(Frame(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array,
                                pbc=atoms.pbc, total_charge=_total_charge(atoms), source="predict",
                                index=k))
        out = predict_frames(self.module, self.metadata, frames, batch_size=batch_size,
                             device=str(self.device))
        for item in out:
            item["free_energy"] = item["energy"]
            if "stress" in item:
                item["stress"] = full_3x3_to_voigt_6_stress(item["stress"])
        return out

    def _check_deviation(self, deviation: np.ndarray) -> None:
        """One :class:`DeviationWarning` per step at which the largest force deviation exceeds
        ``deviation_warning``."""
        worst = int(np.argmax(deviation))
        if self._warned_step or deviation[worst] <= self.deviation_warning:
            return
        self._warned_step = True
        warnings.warn(f"step {self.n_steps}: max force deviation {deviation[worst]:.4f} eV/Å (atom {worst}) "
                      f"exceeds deviation_warning {self.deviation_warning:g} eV/Å: the committee disagrees, "
                      "the structure is probably outside the training data", DeviationWarning, stacklevel=4)

    def _check_pbc(self, pbc: np.ndarray, where: str = "") -> None:
        if self.long_range and pbc.any() and not pbc.all():
            physics = ", ".join(self.metadata.get("physics") or [])
            raise UserError(f"{where}pbc={pbc.tolist()}: this model is long-range (physics terms: {physics}) "
                            "and needs a fully periodic cell or an isolated structure, not mixed periodicity")

    def _build_graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        """Tensors of one frame for ``compute``, with a fresh neighbour list."""
        species = species_of(atoms.numbers, self.elements)
        edge_index, _, edge_shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, self.cutoff)
        self.n_neighbor_builds += 1
        n = len(atoms)

        def real(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=self.dtype, device=self.device)

        return {
            "positions": real(atoms.positions),
            "species": torch.as_tensor(species, device=self.device),
            "edge_index": torch.as_tensor(edge_index, device=self.device),
            "edge_shift": real(edge_shift),
            "cell": real(atoms.cell.array).unsqueeze(0),
            "pbc": torch.as_tensor(np.asarray(atoms.pbc, dtype=bool), device=self.device).unsqueeze(0),
            "batch": torch.zeros(n, dtype=torch.long, device=self.device),
        }


def _total_charge(atoms: Atoms) -> float:
    return float(atoms.info.get("charge", 0.0))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _load(model: str | Path | torch.nn.Module, device: torch.device, dtype: str | torch.dtype | None,
          jit: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(module with a ``compute`` method, metadata) on ``device`` in the requested dtype."""
    if isinstance(model, torch.nn.Module):
        from mlip.export import model_metadata

        meta = model_metadata(model)
        name = _dtype_name(dtype, meta["dtype"])
        module = model
        if name != meta["dtype"] or next(model.parameters()).device != device:
            module = copy.deepcopy(model).to(device=device, dtype=getattr(torch, name))
        module = torch.jit.script(module.eval()) if jit else module.eval()
    else:
        module, meta = load_model(model, str(device))
        name = _dtype_name(dtype, meta["dtype"])
        if name != meta["dtype"]:
            if not list(module.parameters()):
                raise UserError(f"{model}: this model file is frozen (weights are constants) and cannot "
                                f"change dtype; export it as {name} instead")
            module = copy.deepcopy(module).to(getattr(torch, name))
    return module, {**meta, "dtype": name}


def _dtype_name(dtype: str | torch.dtype | None, default: str) -> str:
    name = default if dtype is None else str(dtype).replace("torch.", "")
    if name not in ("float64", "float32"):
        raise UserError(f"dtype must be float64 or float32, got {dtype!r}")
    return name
