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

import copy
import csv
import dataclasses
import io
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mlip.batching import collate
from mlip.data import Dataset
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.fileio import atomic_write_text
from mlip.inference import check_device
from mlip.metrics import ErrorSums
from mlip.model import Potential
from mlip.plots import ParitySet, write_plots
from mlip.train import data as tdata
from mlip.train.checkpoint import load_checkpoint, save_atomic
from mlip.train.config import check_config, load_config, save_config
from mlip.train.loss import LossWeights, batch_loss, predict
from mlip.train.model_builder import build_potential, descriptor_config, fit_energy_reference, torch_dtype

METRIC_FIELDS = ["epoch", "lr", "train_loss", "val_loss", "train_energy_mae_meV_atom", "train_force_mae_eV_A",
                 "val_energy_mae_meV_atom", "val_force_mae_eV_A", "seconds"]


Echo = Callable[[str], Any]


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


def unique_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3`` ... whichever does not exist yet."""
    if not base.exists():
        return base
    k = 2
    while base.with_name(f"{base.name}-{k}").exists():
        k += 1
    return base.with_name(f"{base.name}-{k}")


class Trainer:
    """Trains one run directory. Use :func:`train` or :func:`resume`.

    ``config`` must have passed :func:`mlip.train.config.check_config`; the set-up reads
    ``dataset`` and writes nothing into ``run_dir``.
    """

    def __init__(self, config: dict[str, Any], dataset: Dataset, run_dir: Path, dist: Distributed,
                 echo: Echo = print) -> None:
        self.config = config
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

        frames = list(dataset)
        elements = config["model"]["elements"] or tdata.elements_of(frames)
        self.elements = tdata.check_elements(elements)
        config["model"]["elements"] = self.elements
        config["model"]["descriptors"] = descriptor_config(config["model"], self.elements)
        self.data_hash = tdata.data_hash(frames)
        self.sources = [f.source for f in frames]
        self.train_idx, self.val_idx = dataset.split(
            config["data"]["val_fraction"], tc["seed"], config["data"]["split_by"])

        torch.manual_seed(tc["seed"])
        try:
            self.model: Potential = build_potential(config["model"], self.elements)
        except (ValueError, TypeError) as exc:  # a descriptor's own parameter check
            raise UserError(f"model.descriptors: {exc}") from None
        self.graphs = tdata.build_graphs(frames, self.elements, self.model.cutoff)
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
        self.state = RunState()
        self._stop_signal: int | None = None

    # -- set-up -----------------------------------------------------------------------------
    def _fit_constants(self) -> None:
        """Descriptor (and lattice-sum) normalisation, then per-element reference energies fitted
        to what the physics terms leave over, E − E_physics, at the initial charges."""
        train = [self.graphs[i] for i in self.train_idx]
        batches = [collate(train[k:k + 16], self.dtype) for k in range(0, len(train), 16)]
        if self.model.lattice_mean.shape[0] > 0:
            with torch.no_grad():
                self.model.set_lattice_normalization(torch.cat([
                    self.model.lattice_sums(b["positions"], b["species"], b["cell"], b["batch"],
                                            int(b["species"].shape[0])) for b in batches]))
        self.model.descriptors.fit_normalization(
            [(b["species"], b["edge_index"],
              b["positions"][b["edge_index"][1]] - b["positions"][b["edge_index"][0]] + b["edge_shift"])
             for b in batches], scaling=self.config["model"]["feature_scaling"])
        energies = np.array([g["energy"] for g in train])
        if len(self.model.physics):
            self.model.set_energy_reference(torch.zeros(len(self.elements)), 0.0)
            energies = energies - np.concatenate([self._physics_energy(b) for b in batches])
        shift, scale = fit_energy_reference([g["species"] for g in train], energies, len(self.elements),
                                            [g["forces"] for g in train])
        self.model.set_energy_reference(torch.as_tensor(shift), scale)

    def _physics_energy(self, b: dict[str, torch.Tensor]) -> np.ndarray:
        """Per-frame energy (eV) of the batch; with the networks' energy switched off (zero
        reference and scale) that is the physics terms' energy."""
        with torch.no_grad():
            res = self.model.compute(b, compute_forces=False, compute_virial=False)
        return res["energy"].double().numpy()

    # -- what the run is ---------------------------------------------------------------------
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
                 f"cutoff: {self.model.cutoff:g} Å ({origin})",
                 f"model: {self.model.descriptors.n_features} features per atom, {n_params:,} parameters "
                 f"(hidden {list(mc['hidden'])}, {mc['activation']}, {mc['dtype']})"]
        if self.model.physics:
            lines.append(f"physics terms: {', '.join(t.name for t in self.model.physics)}")
        n_sources = len(set(self.sources))
        lines.append(f"frames: {len(self.graphs)} from {n_sources} source{'s' * (n_sources != 1)}: "
                     f"{len(self.train_idx)} train, {len(self.val_idx)} validation "
                     f"(split_by {dc['split_by']}, val_fraction {dc['val_fraction']:g})"
                     + ("; no validation frames: the validation errors are training errors"
                        if not len(self.val_idx) else ""))
        used, ignored = self._labels()
        lines.append("labels used: " + ", ".join(used))
        if ignored:
            lines.append("labels ignored: " + "; ".join(ignored))
        return lines

    def _labels(self) -> tuple[list[str], list[str]]:
        """(used, ignored) label descriptions over the training frames."""
        tc = self.config["train"]
        n = len(self.train_idx)
        used, ignored = [], []
        for label, weight_key in (("energy", "energy_weight"), ("forces", "force_weight"),
                                  ("stress", "stress_weight"), ("charges", "charge_weight")):
            have = sum(bool(np.isfinite(self.graphs[i][label]).all()) and np.size(self.graphs[i][label]) > 0
                       for i in self.train_idx)
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
    def _batches(self, epoch: int) -> list[np.ndarray]:
        tc = self.config["train"]
        perm = self.train_idx[np.random.default_rng([tc["seed"], epoch]).permutation(len(self.train_idx))]
        if self.dist.world > 1:  # equal shards (wrapping around), so every rank takes the same steps
            n = -(-len(perm) // self.dist.world) * self.dist.world
            perm = np.resize(perm, n)[self.dist.rank::self.dist.world]
        bs = int(tc["batch_size"])
        return [perm[k:k + bs] for k in range(0, len(perm), bs)]

    def _in_stage_two(self, epoch: int) -> bool:
        return epoch >= self.stage_two_start

    def _loss_weights(self, epoch: int) -> LossWeights:
        """The loss weights of ``epoch``: stage two replaces the energy weight."""
        if not self._in_stage_two(epoch):
            return self.weights
        energy = float(self.config["train"]["stage_two_energy_weight"])
        return dataclasses.replace(self.weights, energy=energy)

    def _collate(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return collate([self.graphs[i] for i in idx], self.dtype, self.device)

    def evaluate(self, model: Potential, idx: np.ndarray, weights: LossWeights) -> dict[str, float]:
        """Loss (with ``weights``) and MAEs of ``model`` on frames ``idx``."""
        bs = int(self.config["train"]["batch_size"])
        sums = ErrorSums()
        for k in range(0, len(idx), bs):
            loss, err = batch_loss(model, self._collate(idx[k:k + bs]), weights, create_graph=False)
            sums.add(float(loss.detach()), len(idx[k:k + bs]), err)
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
        progress = _Progress(_progress_mode() if self.dist.rank == 0 else "off", epochs, self.state.epoch,
                             self.echo)
        try:
            while self.state.epoch < epochs:
                if self._epoch(progress):
                    break
            progress.close()
            self.finish(time.perf_counter() - start)
        except Interrupted:
            self.save("last.pt")
            raise
        finally:
            progress.close()
            for s, h in old.items():
                signal.signal(s, h)
        return self.run_dir

    def _epoch(self, progress: _Progress) -> bool:
        """One epoch (from ``state.step``); returns True when early stopping triggers."""
        tc = self.config["train"]
        t0 = time.perf_counter()
        batches = self._batches(self.state.epoch)
        weights = self._loss_weights(self.state.epoch)
        self.model.train()
        while self.state.step < len(batches):
            if self._stop_signal is not None:
                raise Interrupted(self._stop_signal, self.state.epoch + 1, self.run_dir)
            idx = batches[self.state.step]
            loss, err = batch_loss(self.model, self._collate(idx), weights, create_graph=True)
            if not torch.isfinite(loss):
                raise UserError(
                    f"loss is {float(loss.detach())} at epoch {self.state.epoch}, batch {self.state.step} "
                    f"(frames {', '.join(f'{self.sources[i]}#{i}' for i in idx[:4])}); "
                    f"stopped; the last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.dist.average_gradients(self.model)
            if tc["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(tc["grad_clip"]))
            self.opt.step()
            self.ema.update(self.model)
            self.state.sums.add(float(loss.detach()), 1.0, err)
            self.state.step += 1
        train = self.state.sums.summary()
        val = self.evaluate(self.ema.model, self.val_idx, weights) if len(self.val_idx) else train
        lr = self.opt.param_groups[0]["lr"]
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val["loss"])
        else:
            self.sched.step()
        row = {"epoch": self.state.epoch, "lr": lr, "train_loss": train["loss"], "val_loss": val["loss"],
               "train_energy_mae_meV_atom": train["e_mae"], "train_force_mae_eV_A": train["f_mae"],
               "val_energy_mae_meV_atom": val["e_mae"], "val_force_mae_eV_A": val["f_mae"],
               "seconds": time.perf_counter() - t0}
        self.state.history.append(row)
        # losses of different stages are not comparable: stage two picks its best among its own epochs
        first_of_stage = self._in_stage_two(self.state.epoch) and self.state.best_epoch < self.stage_two_start
        improved = first_of_stage or val["loss"] < self.state.best_val
        if improved:
            self.state.best_val, self.state.best_epoch = val["loss"], self.state.epoch
        self.state.epoch += 1
        self.state.step = 0
        self.state.sums = ErrorSums()
        if self.dist.rank == 0:
            self._write_metrics()
            if improved:
                self.save("best.pt")
            if self.state.epoch % int(tc["checkpoint_every"]) == 0 or self.state.epoch == tc["epochs"]:
                self.save("last.pt")
        progress.update(row)
        stale = self.state.epoch - 1 - self.state.best_epoch
        return tc["early_stopping"] > 0 and stale >= int(tc["early_stopping"])

    def _write_metrics(self) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(self.state.history)
        atomic_write_text(self.run_dir / "metrics.csv", text.getvalue())

    def exported_model(self) -> Potential:
        """The EMA weights ``model.pt`` gets: those of the last epoch, or with ``train.export:
        best`` those of the best validation epoch."""
        model = copy.deepcopy(self.ema.model)
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.config["train"]["export"] == "best" and best.exists():
            model.load_state_dict(load_checkpoint(best)["ema"])
        return model

    def finish(self, seconds: float) -> None:
        """Save the final checkpoint, export ``model.pt``, draw the plots and print the summary
        (rank 0); ``seconds`` is the training time to report."""
        self.save("last.pt")
        if self.dist.rank != 0:
            return
        model = self.exported_model().to("cpu")
        meta = model_metadata(model, self.config["model"]["descriptors"], self.data_hash)
        # every tensor, non-persistent buffers included: a scripted module expects those too
        self.scripted.load_state_dict({**dict(model.named_buffers()), **dict(model.named_parameters())})
        export_model(self.scripted, self.run_dir / "model.pt", meta)
        write_plots(self.run_dir, self.state.history, self.stage_two_start, self._parity_set(model))
        for line in self.summary(seconds):
            self.echo(line)

    def _parity_set(self, model: Potential) -> ParitySet:
        """Predictions of ``model`` on the validation frames (the training frames if there are none)."""
        split, idx = ("validation", self.val_idx) if len(self.val_idx) else ("training", self.train_idx)
        e_ref, e_pred, e_group, f_ref, f_pred, f_group = [], [], [], [], [], []
        for k in range(0, len(idx), 8):
            b = collate([self.graphs[i] for i in idx[k:k + 8]], self.dtype)
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


class _Progress:
    """Per-epoch output: a progress bar, or a plain line every few epochs, or nothing."""

    def __init__(self, mode: str, epochs: int, done: int, echo: Echo) -> None:
        self.mode, self.epochs, self.echo = mode, epochs, echo
        self.every = max(1, round(epochs / 20))
        self.bar = tqdm(total=epochs, initial=done, desc="epochs", unit="epoch") if mode == "bar" else None

    def update(self, row: dict[str, float]) -> None:
        """Report the epoch of metrics row ``row``."""
        epoch = int(row["epoch"]) + 1
        errors = (f"train E {row['train_energy_mae_meV_atom']:.2f} F {row['train_force_mae_eV_A']:.3f} | "
                  f"val E {row['val_energy_mae_meV_atom']:.2f} F {row['val_force_mae_eV_A']:.3f}")
        if self.bar is not None:
            self.bar.set_postfix_str(f"{errors} (meV/atom, eV/Å) lr {row['lr']:.1e}", refresh=False)
            self.bar.update(1)
        elif self.mode == "lines" and (epoch == 1 or epoch % self.every == 0 or epoch == self.epochs):
            self.echo(f"epoch {epoch}/{self.epochs}: {errors} (E meV/atom, F eV/Å) lr {row['lr']:.1e} "
                      f"{row['seconds']:.1f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_mode() -> str:
    """``MLIP_PROGRESS``: ``0`` (or off) no per-epoch output, ``bar``, ``lines``; unset (or 1,
    auto): a progress bar when stdout is a terminal, else a line every few epochs."""
    value = os.environ.get("MLIP_PROGRESS", "auto").strip().lower()
    if value in ("0", "off", "no", "false"):
        return "off"
    if value in ("bar", "lines"):
        return value
    return "bar" if sys.stdout.isatty() else "lines"


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


def _run_dir_for(config: dict[str, Any], force: bool) -> Path:
    """The new run's directory: ``out``, or ``runs/<name of the first source>`` (``-2``, ``-3``
    ... if taken). A non-empty ``out`` is refused unless it is a run directory and ``force``."""
    out = config.get("out")
    if out is None:
        sources = config["data"]["sources"]
        name = Path(sources[0]).resolve().name.split(".")[0] if sources else "run"
        return unique_run_dir(Path("runs") / name)
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"out {run_dir} is a file, not a folder: choose another --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} exists and is not an mlip run directory: choose another --out")
        if not force:
            raise UserError(f"{run_dir} holds a run already: continue it with `mlip train --resume "
                            f"{run_dir}`, replace it with --force, or choose another --out")
    return run_dir


def _describe_run(run_dir: Path) -> str:
    """``a run with 3 trained epochs and its model.pt`` for an existing run directory."""
    metrics = run_dir / "metrics.csv"
    epochs = max(0, len(metrics.read_text().splitlines()) - 1) if metrics.is_file() else 0
    parts = [f"{epochs} trained epoch{'s' * (epochs != 1)}"]
    if (run_dir / "model.pt").is_file():
        parts.append("its model.pt")
    return "a run with " + " and ".join(parts)


def _publish(staging: Path, run_dir: Path, force: bool, echo: Echo) -> None:
    """Rename the new run ``staging`` to ``run_dir``; with ``force`` a run there is replaced."""
    if force and run_dir.is_dir() and any(run_dir.iterdir()):
        what = _describe_run(run_dir)
        old = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
        os.replace(run_dir, old)
        try:
            os.replace(staging, run_dir)
        except OSError:
            os.replace(old, run_dir)
            raise
        shutil.rmtree(old)
        echo(f"--force: replaced {run_dir} ({what})")
        return
    try:
        os.replace(staging, run_dir)
    except OSError as exc:
        raise UserError(f"{run_dir} appeared while this run was being set up: choose another --out") from exc


def _create_run(config: dict[str, Any], run_dir: Path, dist: Distributed, force: bool, echo: Echo) -> Trainer:
    """Set the run up in a hidden folder next to ``run_dir`` (data read, model built, config
    saved), then rename it into place. On any failure nothing is left behind, not even the
    parent folders this call created."""
    created = [d for d in (run_dir.parent, *run_dir.parent.parents) if not d.exists()]
    staging = run_dir.with_name(f".{run_dir.name}.new-{os.getpid()}")
    try:
        staging.mkdir(parents=True)
        trainer = Trainer(config, tdata.open_dataset(config["data"], staging), run_dir, dist, echo)
        (staging / "checkpoints").mkdir()
        save_config(config, staging / "config.yaml")
        _publish(staging, run_dir, force, echo)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return trainer


def train(config: dict[str, Any] | None = None, ddp: bool = False, force: bool = False,
          echo: Echo = print) -> Path:
    """Train a new run from a config; returns the run directory.

    The config is checked, the data read and the model set up before anything is written; the
    run directory then appears at once. An existing run at ``out`` is refused, or with ``force``
    replaced. ``echo`` prints what the run is, its progress and its summary.
    """
    config = check_config(config if config is not None else load_config())
    check_device(config["train"]["device"])
    dist = Distributed.setup(ddp, config["train"]["device"])
    run_dir = Path(dist.broadcast(str(_run_dir_for(config, force))))
    config["out"] = str(run_dir)
    if dist.rank == 0:
        trainer = _create_run(config, run_dir, dist, force, echo)
    if dist.active:
        torch.distributed.barrier()
    if dist.rank != 0:
        trainer = Trainer(config, tdata.open_dataset(config["data"], run_dir, build=False), run_dir, dist)
    for line in [f"new run: {run_dir}", *trainer.describe()]:
        trainer.echo(line)
    return trainer.fit()


def resume(run_dir: str | Path, ddp: bool = False, overrides: dict[str, Any] | None = None,
           echo: Echo = print) -> Path:
    """Continue a run from ``run_dir/checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml", overrides)
    check_device(config["train"]["device"])
    dist = Distributed.setup(ddp, config["train"]["device"])
    if dist.rank == 0:
        dataset = tdata.open_dataset(config["data"], run_dir)
    if dist.active:
        torch.distributed.barrier()
    if dist.rank != 0:
        dataset = tdata.open_dataset(config["data"], run_dir, build=False)
    trainer = Trainer(config, dataset, run_dir, dist, echo)
    if ckpt_path.is_file():
        trainer.load(load_checkpoint(ckpt_path))
    state = trainer.state
    trainer.echo(f"resuming {run_dir} at epoch {state.epoch + 1} of {config['train']['epochs']}"
                 + (f", batch {state.step + 1}" if state.step else ""))
    for line in trainer.describe():
        trainer.echo(line)
    return trainer.fit()
