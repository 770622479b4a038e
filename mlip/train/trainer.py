"""The training loop: AdamW, LR schedule, EMA, early stopping, checkpoints, resume, DDP.

Reproducibility: the model is initialised from ``train.seed``, and the batch order of
epoch ``e`` is a permutation seeded by ``(seed, e)``. A checkpoint records the epoch and
the batch reached (with the sums of that epoch's errors so far), so a resumed run takes
exactly the steps an uninterrupted one takes and reports the same metrics.

Safety: :func:`train` checks the config and reads the data before it writes anything, builds
the new run in a hidden folder next to it and renames that into place; an existing run
directory is written into only by :func:`resume`, or replaced with ``force=True``. SIGINT and
SIGTERM save ``checkpoints/last.pt`` and raise :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlip.data import Dataset
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.fileio import atomic_write_text
from mlip.inference import check_device
from mlip.metrics import ErrorSums
from mlip.model import Potential
from mlip.model.members import parameter_groups
from mlip.physics.core import FALLBACK_SCALE, fallback_distance
from mlip.plots import ParitySet
from mlip.train import data as tdata
from mlip.train.callbacks import Callback, default_callbacks
from mlip.train.checkpoint import load_checkpoint, save_atomic
from mlip.train.config import check_config, load_config, load_run_config, save_config
from mlip.train.init import InitSource, fixed_references, start_from, union_feature_range
from mlip.train.loader import EpochBatches, GraphData, bootstrap_counts, graph_loader
from mlip.train.loss import LossWeights, batch_loss, predict
from mlip.train.model_builder import build_potential, descriptor_config, fit_energy_reference, torch_dtype
from mlip.train.rundir import run_dir_for, run_lock, staged_run

Echo = Callable[[str], Any]
INIT_RECORD = "init.json"  # in a run started with --init: what it started from (mlip.train.init)


class Interrupted(Exception):
    """Training stopped by a signal after saving ``checkpoints/last.pt``; ``exit_code`` is
    128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, epoch: int, run_dir: Path) -> None:
        super().__init__(f"interrupted at epoch {epoch}; resume with: mlip train --resume {run_dir}")
        self.exit_code = 128 + signum


@dataclass
class Distributed:
    """Rank and world size (1 process unless launched by torchrun)."""

    rank: int = 0
    world: int = 1
    active: bool = False

    @classmethod
    def setup(cls, force: bool, device: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 and not force:
            return cls()
        if "MASTER_ADDR" not in os.environ:
            raise UserError("--ddp needs a torchrun launch: torchrun --nproc_per_node=N -m mlip train ...")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
        return cls(torch.distributed.get_rank(), torch.distributed.get_world_size(), True)

    def average_gradients(self, model: torch.nn.Module) -> None:
        if not self.active:
            return
        for p in model.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


@dataclass
class RunState:
    """What a checkpoint holds besides weights and optimiser state."""

    epoch: int = 0  # epoch in progress
    step: int = 0  # batches of that epoch already taken
    best_val: float = math.inf
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    sums: ErrorSums = field(default_factory=ErrorSums)  # training errors of the epoch so far


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.updates = 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for pe, p in zip(self.model.parameters(), model.parameters(), strict=True):
            pe.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for be, b in zip(self.model.buffers(), model.buffers(), strict=True):
            be.copy_(b)


class Trainer:
    """Trains one run directory: the loop, with the metrics file, checkpoints, progress, plots
    and summary as callbacks (:mod:`mlip.train.callbacks`). Use :func:`train` or :func:`resume`.

    ``config`` must have passed :func:`mlip.train.config.check_config`; the set-up reads
    ``dataset`` and writes nothing into ``run_dir``. Batches are streamed from ``dataset``
    (:mod:`mlip.train.loader`): memory grows with the batch size, not with the data set.
    ``fresh``: a new run, which starts from ``train.init``'s model when set (:mod:`mlip.train.init`);
    a resumed one (False) takes everything from its checkpoint.
    """

    def __init__(self, config: dict[str, Any], dataset: Dataset, run_dir: Path, dist: Distributed,
                 echo: Echo = print, fresh: bool = True) -> None:
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.dist = dist
        self.echo = echo if dist.rank == 0 else _silent
        tc = config["train"]
        self.device = torch.device(tc["device"])
        if tc["threads"]:
            torch.set_num_threads(int(tc["threads"]))
        self.dtype = torch_dtype(config["model"]["dtype"])
        self.weights = LossWeights(tc["energy_weight"], tc["force_weight"], tc["stress_weight"],
                                   tc["charge_weight"])
        self.stage_two_start = int(tc["epochs"]) - round(float(tc["stage_two_fraction"]) * int(tc["epochs"]))

        self.init = InitSource.load(tc["init"]) if tc["init"] and fresh else None
        self.init_notes: list[str] = []
        elements = config["model"]["elements"] or dataset.elements
        if self.init is not None:  # the old run's elements and any the new data brings
            elements = list(elements) + [e for e in dataset.elements if e not in elements]
        self.elements = tdata.check_elements(elements)
        config["model"]["elements"] = self.elements
        config["model"]["descriptors"] = descriptor_config(config["model"], self.elements)
        self.data_hash = tdata.data_hash(dataset)
        self.train_idx, self.val_idx = dataset.split(
            config["data"]["val_fraction"], tc["seed"], config["data"]["split_by"],
            config["data"]["holdout"])

        members = int(config["model"]["committee"])
        # committee: member k's bootstrap resample as per-frame counts (members, n_frames)
        self.member_counts = (bootstrap_counts(self.train_idx, len(dataset), members, tc["seed"])
                              if members > 1 else None)

        torch.manual_seed(tc["seed"])
        self.model: Potential = build_potential(config["model"], self.elements)
        self.graphs = GraphData(dataset, self.elements, self.model.cutoff)
        self._fit_constants()
        # compiled now, from the sources this run starts with; finish() exports it (see export_model)
        self.scripted = torch.jit.script(copy.deepcopy(self.model).eval()) if dist.rank == 0 else None
        self.model.to(self.device)
        self.ema = EMA(self.model, tc["ema_decay"])
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
        if tc["scheduler"] == "cosine":
            self.sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, T_max=max(1, tc["epochs"]), eta_min=tc["min_lr"])
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=tc["plateau_factor"], patience=tc["plateau_patience"], min_lr=tc["min_lr"])
        bs, workers = int(tc["batch_size"]), int(tc["workers"])
        self.train_batches = EpochBatches(self.train_idx, bs, tc["seed"], rank=dist.rank, world=dist.world)
        self.train_loader = graph_loader(self.graphs, self.train_batches, self.dtype, workers)
        self.val_loader = graph_loader(self.graphs, EpochBatches(self.val_idx, bs, shuffle=False), self.dtype,
                                       workers)
        self.state = RunState()
        self._stop_signal: int | None = None

    # -- set-up -----------------------------------------------------------------------------
    def _stream(self, idx: np.ndarray, batch_size: int = 16) -> Any:
        """Batches of frames ``idx`` in order, built in this process (set-up and plots)."""
        return graph_loader(self.graphs, EpochBatches(idx, batch_size, shuffle=False), self.dtype)

    def _fit_constants(self) -> None:
        """Descriptor normalisation and the shortest distance of each element
        pair, then the descriptors' range, then per-element reference energies fitted to what the
        physics terms leave over, E − E_physics, at the initial charges; each a pass over the
        training frames, batch by batch."""
        n = len(self.elements)
        closest = torch.full((n * n,), math.inf, dtype=torch.float64)
        species: list[np.ndarray] = []
        forces: list[np.ndarray] = []
        energies: list[np.ndarray] = []

        def descriptor_inputs() -> Any:
            for b in self._stream(self.train_idx):
                starts = np.cumsum(b["n_atoms"].numpy())[:-1]
                species.extend(np.split(b["species"].numpy(), starts))
                forces.extend(np.split(b["forces"].numpy(), starts))
                energies.append(b["energy"].numpy())
                src, dst = b["edge_index"]
                pos = b["positions"]
                edge_vec = pos[dst] - pos[src] + b["edge_shift"]
                pair = b["species"][src] * n + b["species"][dst]
                closest.scatter_reduce_(0, pair, torch.linalg.vector_norm(edge_vec, dim=1).double(), "amin")
                yield b["species"], b["edge_index"], edge_vec, int(b["species"].shape[0]), b  # b: for PotNet

        self.model.descriptors.fit_normalization(descriptor_inputs(),
                                                 scaling=self.config["model"]["feature_scaling"])
        closest = closest.view(n, n)
        seen = torch.isfinite(closest)
        self.model.set_min_pair_distance(torch.where(seen, closest, fallback_distance(self.elements)), seen)
        fixed = None
        if self.init is not None:  # the old run's networks, normalisation and references
            started = start_from(self.model, self.init)
            self.init_notes = started.notes
            fixed = fixed_references(self.init, self.elements)
            low, high = union_feature_range(self.model, self.init, started.columns, *self._feature_range())
            self.model.set_feature_range(low, high)
        else:
            self.model.set_feature_range(*self._feature_range())
        energy = np.concatenate(energies)
        # a second pass: charges from the normalised features (the core is 0 on the training frames)
        if any(t.name != "core" for t in self.model.physics):
            kept = float(self.model.energy_scale)
            self.model.set_energy_reference(torch.zeros(len(self.elements)), 0.0)
            energy = energy - np.concatenate([self._physics_energy(b) for b in self._stream(self.train_idx)])
            self.model.energy_scale.fill_(kept)
        shift, scale = fit_energy_reference(species, energy, len(self.elements), forces, fixed)
        if self.init is not None:
            scale = float(self.model.energy_scale)  # the old run's: its networks' outputs are in it
        self.model.set_energy_reference(torch.as_tensor(shift), scale)

    def _feature_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element min and max (n_species, F) of the normalised descriptors of the training
        atoms (±inf for elements without atoms): one pass."""
        shape = (len(self.elements), self.model.descriptors.n_features)
        low = torch.full(shape, math.inf, dtype=torch.float64)
        high = torch.full(shape, -math.inf, dtype=torch.float64)
        with torch.no_grad():
            for b in self._stream(self.train_idx):
                src, dst = b["edge_index"]
                pos = b["positions"]
                species = b["species"]
                f = self.model.descriptors(species, b["edge_index"], pos[dst] - pos[src] + b["edge_shift"],
                                           int(species.shape[0]), b).double()
                index = species.unsqueeze(1).expand_as(f)
                low.scatter_reduce_(0, index, f, "amin")
                high.scatter_reduce_(0, index, f, "amax")
        missing = ~torch.isfinite(low)
        return low.masked_fill(missing, -math.inf), high.masked_fill(missing, math.inf)

    def _physics_energy(self, b: dict[str, torch.Tensor]) -> np.ndarray:
        """Per-frame energy (eV) of the batch; with the networks' energy switched off (zero
        reference and scale) that is the physics terms' energy."""
        with torch.no_grad():
            res = self.model.compute(b, compute_forces=False, compute_virial=False)
        return res["energy"].double().numpy()

    # -- what the run is ---------------------------------------------------------------------
    def _describe_cutoff(self, descriptors: list[dict[str, Any]], origin: str) -> str:
        """The descriptors' cutoff and where it comes from, and the model's edge range when a
        physics or long-range term needs longer edges than the descriptors."""
        cutoffs = [float(d["cutoff"]) for d in descriptors if "cutoff" in d]
        if not cutoffs:
            return f"cutoff: {self.model.cutoff:g} Å ({origin})"
        line = f"cutoff: {max(cutoffs):g} Å ({origin})"
        if self.model.cutoff > max(cutoffs) + 1e-9:
            line += f"; edges to {self.model.cutoff:g} Å for the physics and long-range terms"
        return line

    def describe(self) -> list[str]:
        """What this run trains: elements, descriptors and cutoff, feature and parameter counts,
        the split, and which labels are used or present but ignored."""
        mc, dc = self.config["model"], self.config["data"]
        desc = mc["descriptors"]
        default = desc == descriptor_config({"descriptors": "default"}, self.elements)
        origin = ("the default for these elements: twice the mean nearest-neighbour distance, at least 5 Å"
                  if default else "from model.descriptors")
        n_params = sum(p.numel() for p in self.model.parameters())
        lines = [f"elements: {', '.join(self.elements)}",
                 "descriptors: " + "; ".join(_describe_descriptor(d) for d in desc),
                 self._describe_cutoff(desc, origin),
                 f"model: {self.model.descriptors.n_features} features per atom, {n_params:,} parameters "
                 f"(hidden {list(mc['hidden'])}, {mc['activation']}, {mc['dtype']})"]
        if self.member_counts is not None:
            left_out = (self.member_counts[:, self.train_idx] == 0).mean(axis=1)
            shares = ", ".join(f"{x:.0%}" for x in left_out)
            lines.append(f"committee: {self.model.committee} members on the shared descriptors, each with "
                         f"its own networks and bootstrap resample of the {len(self.train_idx)} train frames "
                         f"(frames left out: {shares}); model.pt predicts their mean and deviation")
        terms = [t.name for t in self.model.physics if t.name != "core"]  # the core: next line
        if terms:
            lines.append(f"physics terms: {', '.join(terms)}")
        lines.append(self._describe_repulsion())
        lines += self.init_notes
        n_sources = len(np.unique(self.dataset.source_id))
        lines.append(f"frames: {len(self.dataset)} from {n_sources} source{'s' * (n_sources != 1)}: "
                     f"{len(self.train_idx)} train, {len(self.val_idx)} validation "
                     f"(split_by {dc['split_by']}, val_fraction {dc['val_fraction']:g})"
                     + ("; no validation frames: the validation errors are training errors"
                        if not len(self.val_idx) else ""))
        used, ignored = self._labels()
        lines.append("labels used: " + ", ".join(used))
        if ignored:
            lines.append("labels ignored: " + "; ".join(ignored))
        return lines

    def _describe_repulsion(self) -> str:
        """The shortest distance of each element pair in the training frames and what
        ``model.repulsion`` does below it."""
        pairs = []
        for i, j in zip(*np.triu_indices(len(self.elements)), strict=True):
            r = float(self.model.min_pair_distance[i, j])
            seen = bool(self.model.min_pair_seen[i, j])
            pairs.append(f"{self.elements[i]}-{self.elements[j]} {r:.3f} Å" + ("" if seen else " (not in the "
                         f"data: fallback {FALLBACK_SCALE:g} × sum of covalent radii)"))
        cores = [t for t in self.model.physics if t.name == "core"]
        what = (f"ZBL switched on from {cores[0].inner_fraction:g} r_min to r_min, the descriptors see "
                "closer pairs at r_min" if cores else "none (model.repulsion none)")
        return f"shortest pair distances r_min: {', '.join(pairs)}; repulsion below r_min: {what}"

    def _labels(self) -> tuple[list[str], list[str]]:
        """(used, ignored) label descriptions over the training frames."""
        tc = self.config["train"]
        n = len(self.train_idx)
        used, ignored = [], []
        for label, weight_key in (("energy", "energy_weight"), ("forces", "force_weight"),
                                  ("stress", "stress_weight"), ("charges", "charge_weight")):
            have = int(getattr(self.dataset, f"has_{label}")[self.train_idx].sum())
            weight = float(tc[weight_key])
            if have and label == "charges" and not self.model.has_charges:
                ignored.append(f"charges present in {have} train frames, the model has none "
                               f"(model.charges {self.config['model']['charges']}): not used")
            elif have and weight > 0:
                extra = ""
                if label == "energy" and self.stage_two_start < int(tc["epochs"]):
                    extra = (f", {float(tc['stage_two_energy_weight']):g} from epoch "
                             f"{self.stage_two_start + 1} (stage two)")
                used.append(f"{label} ({have} of {n} train frames, weight {weight:g}{extra})")
            elif have:
                ignored.append(f"{label} present in {have} train frames, {weight_key.replace('_', ' ')} 0: "
                               "not used")
            elif weight > 0 and label != "energy":
                ignored.append(f"{label}: {weight_key.replace('_', ' ')} {weight:g} but no train frame has "
                               f"{label}: not used")
        return used, ignored

    def summary(self, seconds: float) -> list[str]:
        """Best and last validation errors, what model.pt holds, and the time taken."""
        tc = self.config["train"]
        lines = []
        rows = {int(h["epoch"]): h for h in self.state.history}
        for name, epoch in (("best", self.state.best_epoch), ("last", self.state.epoch - 1)):
            if epoch in rows:
                h = rows[epoch]
                lines.append(f"{name} validation: epoch {epoch + 1}: E {h['val_energy_mae_meV_atom']:.3f} "
                             f"meV/atom, F {h['val_force_mae_eV_A']:.4f} eV/Å")
        best = tc["export"] == "best" and (self.run_dir / "checkpoints" / "best.pt").exists()
        source = (f"checkpoints/best.pt, epoch {self.state.best_epoch + 1}" if best
                  else f"checkpoints/last.pt, epoch {self.state.epoch}")
        lines.append(f"model: {self.run_dir / 'model.pt'} (EMA weights of {source}; "
                     f"train.export {tc['export']})")
        lines.append(f"time: {_duration(seconds)}")
        return lines

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "sums": dataclasses.asdict(self.state.sums),
            "best_val": self.state.best_val,
            "best_epoch": self.state.best_epoch,
            "history": self.state.history,
        }

    def save(self, name: str) -> None:
        if self.dist.rank == 0:
            save_atomic(self.checkpoint(), self.run_dir / "checkpoints" / name)

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.model.load_state_dict(ckpt["ema"])
        self.ema.updates = int(ckpt["ema_updates"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.state = RunState(int(ckpt["epoch"]), int(ckpt["step"]), float(ckpt["best_val"]),
                              int(ckpt["best_epoch"]), list(ckpt["history"]),
                              ErrorSums(**ckpt.get("sums", {})))

    # -- loop -------------------------------------------------------------------------------
    def _in_stage_two(self, epoch: int) -> bool:
        return epoch >= self.stage_two_start

    def _loss_weights(self, epoch: int) -> LossWeights:
        """The loss weights of ``epoch``: stage two replaces the energy weight."""
        if not self._in_stage_two(epoch):
            return self.weights
        energy = float(self.config["train"]["stage_two_energy_weight"])
        return dataclasses.replace(self.weights, energy=energy)

    def evaluate(self, model: Potential, weights: LossWeights) -> dict[str, float]:
        """Loss (with ``weights``) and MAEs of ``model`` on the validation frames."""
        sums = ErrorSums()
        for b in self.val_loader:
            loss, err = batch_loss(model, _to(b, self.device), weights, create_graph=False)
            sums.add(float(loss.detach()), int(b["n_atoms"].shape[0]), err)
        return sums.summary()

    def _handle_signal(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signum

    def fit(self) -> Path:
        """Train to the last epoch (or early stopping), then :meth:`finish`. SIGINT/SIGTERM save
        ``last.pt`` at the next batch and raise :class:`Interrupted`; once the epochs are done,
        a signal lets the export finish."""
        epochs = int(self.config["train"]["epochs"])
        start = time.perf_counter()
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.callbacks: list[Callback] = (default_callbacks(self.config, self.state.epoch, self.echo)
                                          if self.dist.rank == 0 else [])
        try:
            while self.state.epoch < epochs:
                if self._epoch():
                    break
            for callback in self.callbacks:
                callback.close()
            self.finish(time.perf_counter() - start)
        except Interrupted:
            self.save("last.pt")
            raise
        finally:
            for callback in self.callbacks:
                callback.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self.run_dir

    def _epoch(self) -> bool:
        """One epoch (from ``state.step``); returns True when early stopping triggers."""
        tc = self.config["train"]
        t0 = time.perf_counter()
        epoch = self.state.epoch
        self.train_batches.set_epoch(epoch, self.state.step)
        frames = self.train_batches.batches()
        weights = self._loss_weights(epoch)
        self.model.train()
        for b in self.train_loader:
            if self._stop_signal is not None:
                raise Interrupted(self._stop_signal, epoch + 1, self.run_dir)
            loss, err = batch_loss(self.model, _to(b, self.device), weights, create_graph=True,
                                   member_weights=self._member_weights(frames[self.state.step]))
            if not torch.isfinite(loss):
                idx = frames[self.state.step]
                names = ", ".join(f"{self.dataset.sources[self.dataset.source_id[i]]}#{i}" for i in idx[:4])
                raise UserError(
                    f"loss is {float(loss.detach())} at epoch {epoch}, batch {self.state.step} "
                    f"(frames {names}); stopped; the last good checkpoint is "
                    f"{self.run_dir / 'checkpoints' / 'last.pt'}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.dist.average_gradients(self.model)
            if tc["grad_clip"]:  # each committee member on its own, as if it trained alone
                for group in parameter_groups(self.model):
                    torch.nn.utils.clip_grad_norm_(group, float(tc["grad_clip"]))
            self.opt.step()
            self.ema.update(self.model)
            self.state.sums.add(float(loss.detach()), 1.0, err)
            self.state.step += 1
        train = self.state.sums.summary()
        val = self.evaluate(self.ema.model, weights) if len(self.val_idx) else train
        lr = self.opt.param_groups[0]["lr"]
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val["loss"])
        else:
            self.sched.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": train["loss"], "val_loss": val["loss"],
               "train_energy_mae_meV_atom": train["e_mae"], "train_force_mae_eV_A": train["f_mae"],
               "val_energy_mae_meV_atom": val["e_mae"], "val_force_mae_eV_A": val["f_mae"],
               "seconds": time.perf_counter() - t0}
        self.state.history.append(row)
        # losses of different stages are not comparable: stage two picks its best among its own epochs
        first_of_stage = self._in_stage_two(epoch) and self.state.best_epoch < self.stage_two_start
        improved = first_of_stage or val["loss"] < self.state.best_val
        if improved:
            self.state.best_val, self.state.best_epoch = val["loss"], epoch
        self.state.epoch += 1
        self.state.step = 0
        self.state.sums = ErrorSums()
        for callback in self.callbacks:
            callback.on_epoch_end(self, row, improved)
        stale = self.state.epoch - 1 - self.state.best_epoch
        return tc["early_stopping"] > 0 and stale >= int(tc["early_stopping"])

    def _member_weights(self, frames: np.ndarray) -> torch.Tensor | None:
        """(K, B) bootstrap counts of the frames ``frames`` (dataset indices) for each committee
        member, in the model's dtype on its device; None for a single model."""
        if self.member_counts is None:
            return None
        return torch.as_tensor(self.member_counts[:, frames], dtype=self.dtype, device=self.device)

    def exported_model(self) -> Potential:
        """The EMA weights ``model.pt`` gets: those of the last epoch, or with ``train.export:
        best`` those of the best validation epoch."""
        # a fresh module, not a deep copy: physics terms may hold per-call tensors with autograd
        # history (torch-pme's mesh state), which cannot be deep-copied
        model = build_potential(self.config["model"], self.elements).to(self.dtype)
        model.load_state_dict(self.ema.model.state_dict())
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.config["train"]["export"] == "best" and best.exists():
            model.load_state_dict(load_checkpoint(best)["ema"])
        return model

    def finish(self, seconds: float) -> None:
        """Save the final checkpoint and export ``model.pt`` (rank 0), then the callbacks' ends
        (plots, summary); ``seconds`` is the training time to report."""
        self.save("last.pt")
        if self.dist.rank != 0:
            return
        model = self.exported_model().to("cpu")
        meta = model_metadata(model, self.config["model"]["descriptors"], self.data_hash)
        if (self.run_dir / INIT_RECORD).is_file():
            meta["init"] = json.loads((self.run_dir / INIT_RECORD).read_text())
        # every tensor, non-persistent buffers included: a scripted module expects those too
        self.scripted.load_state_dict({**dict(model.named_buffers(remove_duplicate=False)),
                                       **dict(model.named_parameters())})
        export_model(self.scripted, self.run_dir / "model.pt", meta)
        for callback in self.callbacks:
            callback.on_fit_end(self, model, seconds)

    def parity_set(self, model: Potential) -> ParitySet:
        """Predictions of ``model`` on the validation frames (the training frames if there are none)."""
        split, idx = ("validation", self.val_idx) if len(self.val_idx) else ("training", self.train_idx)
        e_ref, e_pred, e_group, f_ref, f_pred, f_group = [], [], [], [], [], []
        for b in self._stream(idx, 8):
            b = _to(b, model.energy_shift.device)
            res = predict(model, b, forces=True, stress=False, create_graph=False)
            n = b["n_atoms"].numpy()
            e_ref.append(b["energy"].numpy() / n)
            e_pred.append(res["energy"].detach().numpy() / n)
            f_ref.append(b["forces"].numpy().ravel())
            f_pred.append(res["forces"].detach().numpy().ravel())
            species, frame_of = b["species"].numpy(), b["batch"].numpy()
            f_group.append(np.repeat(np.array(self.elements)[species], 3))
            e_group += ["".join(self.elements[z] for z in np.unique(species[frame_of == j]))
                        for j in range(len(n))]
        return ParitySet(split, np.concatenate(e_ref), np.concatenate(e_pred), np.array(e_group),
                         np.concatenate(f_ref), np.concatenate(f_pred), np.concatenate(f_group))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """``batch`` with every tensor on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def _describe_descriptor(entry: dict[str, Any]) -> str:
    """``power_spectrum (cutoff 5.1, n_max 6, ...)`` for one descriptor config."""
    options = ", ".join(f"{k} {v}" for k, v in entry.items() if k != "type")
    return f"{entry.get('type')} ({options})" if options else str(entry.get("type"))


def _duration(seconds: float) -> str:
    """``42.1 s``, ``3 min 12 s`` or ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _silent(_line: str) -> None:
    """The echo of ranks other than 0."""


def train(config: dict[str, Any] | None = None, ddp: bool = False, force: bool = False,
          echo: Echo = print) -> Path:
    """Train a new run from a config; returns the run directory.

    The config is checked, the data read and the model set up before anything is written; the
    run directory then appears at once (:mod:`mlip.train.rundir`). An existing run at ``out``
    is refused, or with ``force`` replaced. ``echo`` prints what the run is, its progress and its
    summary.
    """
    config = check_config(config if config is not None else load_config())
    check_device(config["train"]["device"])
    dist = Distributed.setup(ddp, config["train"]["device"])
    run_dir = Path(dist.broadcast(str(run_dir_for(config, force))))
    config["out"] = str(run_dir)
    if dist.rank == 0:
        with staged_run(run_dir, force, echo) as staging:
            trainer = _trainer(config, tdata.open_dataset(config["data"], staging), run_dir, dist, echo)
            (staging / "checkpoints").mkdir()
            save_config(config, staging / "config.yaml")
            if trainer.init is not None:
                atomic_write_text(staging / INIT_RECORD, json.dumps(trainer.init.record(), indent=1))
        trainer.dataset = tdata.open_dataset(config["data"], run_dir)  # the file moved with its folder
        trainer.graphs.dataset = trainer.dataset
    if dist.active:
        torch.distributed.barrier()
    if dist.rank != 0:
        trainer = _trainer(config, tdata.open_dataset(config["data"], run_dir, build=False), run_dir, dist)
    for line in [f"new run: {run_dir}", *trainer.describe()]:
        trainer.echo(line)
    with run_lock(run_dir) if dist.rank == 0 else contextlib.nullcontext():
        return trainer.fit()


def _trainer(config: dict[str, Any], dataset: Dataset, run_dir: Path, dist: Distributed,
             echo: Echo = print, fresh: bool = True) -> Trainer:
    """A :class:`Trainer`; a descriptor's own parameter check becomes one UserError."""
    try:
        return Trainer(config, dataset, run_dir, dist, echo, fresh)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"model.descriptors: {exc}") from None


def resume(run_dir: str | Path, ddp: bool = False, overrides: dict[str, Any] | None = None,
           echo: Echo = print) -> Path:
    """Continue a run from ``run_dir/checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_run_config(run_dir / "config.yaml", overrides)
    check_device(config["train"]["device"])
    dist = Distributed.setup(ddp, config["train"]["device"])
    with run_lock(run_dir) if dist.rank == 0 else contextlib.nullcontext():
        if dist.rank == 0:
            dataset = tdata.open_dataset(config["data"], run_dir)
        if dist.active:
            torch.distributed.barrier()
        if dist.rank != 0:
            dataset = tdata.open_dataset(config["data"], run_dir, build=False)
        trainer = _trainer(config, dataset, run_dir, dist, echo, fresh=False)
        if ckpt_path.is_file():
            trainer.load(load_checkpoint(ckpt_path))
        state = trainer.state
        trainer.echo(f"resuming {run_dir} at epoch {state.epoch + 1} of {config['train']['epochs']}"
                     + (f", batch {state.step + 1}" if state.step else ""))
        for line in trainer.describe():
            trainer.echo(line)
        return trainer.fit()
