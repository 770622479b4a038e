"""The training loop: AdamW, LR schedule, EMA, early stopping, checkpoints, resume, DDP.

Reproducibility: the model is initialised from ``train.seed``, and the batch order of
epoch ``e`` is a permutation seeded by ``(seed, e)``. A checkpoint records the epoch and
the batch reached, so a resumed run takes exactly the steps an uninterrupted one takes.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mlip.batching import collate
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.model import Potential
from mlip.train import data as tdata
from mlip.train.checkpoint import load_checkpoint, save_atomic
from mlip.train.config import load_config, save_config
from mlip.train.loss import LossWeights, batch_loss
from mlip.train.model_builder import build_potential, descriptor_config, fit_energy_reference, torch_dtype

METRIC_FIELDS = ["epoch", "lr", "train_loss", "val_loss", "train_energy_mae_meV_atom", "train_force_mae_eV_A",
                 "val_energy_mae_meV_atom", "val_force_mae_eV_A", "seconds"]


class _Interrupted(Exception):
    pass


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
    """Trains one run directory. Use :func:`train` or :func:`resume`."""

    def __init__(self, config: dict[str, Any], run_dir: Path, dist: Distributed) -> None:
        self.config = config
        self.run_dir = run_dir
        self.dist = dist
        tc = config["train"]
        self.device = torch.device(tc["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda requested but CUDA is not available")
        if tc.get("threads"):
            torch.set_num_threads(int(tc["threads"]))
        self.dtype = torch_dtype(config["model"]["dtype"])
        self.weights = LossWeights(tc["energy_weight"], tc["force_weight"], tc["stress_weight"],
                                   tc["charge_weight"])
        if config["model"]["feature_scaling"] not in ("block", "feature"):
            raise UserError("model.feature_scaling must be 'block' or 'feature', "
                            f"got {config['model']['feature_scaling']!r}")
        if not 0.0 <= float(tc["stage_two_fraction"]) <= 1.0:
            raise UserError("train.stage_two_fraction must be between 0 and 1, "
                            f"got {tc['stage_two_fraction']}")
        self.stage_two_start = int(tc["epochs"]) - round(float(tc["stage_two_fraction"]) * int(tc["epochs"]))
        if tc["export"] not in ("last", "best"):
            raise UserError(f"train.export must be 'last' or 'best', got {tc['export']!r}")

        if dist.rank == 0:
            dataset = tdata.open_dataset(config["data"], run_dir)
        if dist.active:
            torch.distributed.barrier()
        if dist.rank != 0:
            dataset = tdata.open_dataset(config["data"], run_dir, build=False)
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
        self.model: Potential = build_potential(config["model"], self.elements)
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
        elif tc["scheduler"] == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=tc["plateau_factor"], patience=tc["plateau_patience"], min_lr=tc["min_lr"])
        else:
            raise UserError(f"train.scheduler must be 'plateau' or 'cosine', got {tc['scheduler']!r}")
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
            res = self.model.compute(b["positions"], b["species"], b["edge_index"], b["edge_shift"],
                                     b["cell"], b["pbc"], b["batch"], b["total_charge"],
                                     int(b["species"].shape[0]), compute_forces=False,
                                     compute_virial=False)
        return res["energy"].double().numpy()

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
                              int(ckpt["best_epoch"]), list(ckpt["history"]))

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
        losses, e_err, f_err = [], [], []
        for k in range(0, len(idx), bs):
            loss, err = batch_loss(model, self._collate(idx[k:k + bs]), weights, create_graph=False)
            losses.append(float(loss.detach()) * len(idx[k:k + bs]))
            e_err.append(err["e"].cpu().numpy())
            if "f" in err:
                f_err.append(err["f"].cpu().numpy())
        return _summary(sum(losses) / max(len(idx), 1), e_err, f_err)

    def _handle_signal(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signum

    def fit(self) -> Path:
        tc = self.config["train"]
        epochs = int(tc["epochs"])
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=epochs, initial=self.state.epoch, desc="train", unit="epoch",
                   disable=self.dist.rank != 0 or not _progress_enabled())
        try:
            while self.state.epoch < epochs:
                if self._epoch(bar):
                    break
        except _Interrupted:
            self.save("last.pt")
            raise
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        self.finish()
        return self.run_dir

    def _epoch(self, bar: tqdm) -> bool:
        """One epoch (from ``state.step``); returns True when early stopping triggers."""
        tc = self.config["train"]
        t0 = time.perf_counter()
        batches = self._batches(self.state.epoch)
        weights = self._loss_weights(self.state.epoch)
        self.model.train()
        losses, e_err, f_err = [], [], []
        while self.state.step < len(batches):
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
            losses.append(float(loss.detach()))
            e_err.append(err["e"].cpu().numpy())
            if "f" in err:
                f_err.append(err["f"].cpu().numpy())
            self.state.step += 1
            if self._stop_signal is not None:
                raise _Interrupted()
        train = _summary(float(np.mean(losses)) if losses else math.nan, e_err, f_err)
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
        if self.dist.rank == 0:
            self._write_metrics()
            if improved:
                self.save("best.pt")
            if self.state.epoch % int(tc["checkpoint_every"]) == 0 or self.state.epoch == tc["epochs"]:
                self.save("last.pt")
        bar.update(1)
        bar.set_postfix_str(f"E {train['e_mae']:.2f}/{val['e_mae']:.2f} meV/at "
                            f"F {train['f_mae']:.3f}/{val['f_mae']:.3f} eV/Å lr {lr:.1e}")
        stale = self.state.epoch - 1 - self.state.best_epoch
        return tc["early_stopping"] > 0 and stale >= int(tc["early_stopping"])

    def _write_metrics(self) -> None:
        path = self.run_dir / "metrics.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.state.history)
        tmp.replace(path)

    def exported_model(self) -> Potential:
        """The EMA weights ``model.pt`` gets: those of the last epoch, or with ``train.export:
        best`` those of the best validation epoch."""
        model = copy.deepcopy(self.ema.model)
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.config["train"]["export"] == "best" and best.exists():
            model.load_state_dict(load_checkpoint(best)["ema"])
        return model

    def finish(self) -> None:
        """Save the final checkpoint, export ``model.pt`` and draw the plots (rank 0)."""
        self.save("last.pt")
        if self.dist.rank != 0:
            return
        model = self.exported_model().to("cpu")
        meta = model_metadata(model, self.config["model"]["descriptors"], self.data_hash)
        # every tensor, non-persistent buffers included: a scripted module expects those too
        self.scripted.load_state_dict({**dict(model.named_buffers()), **dict(model.named_parameters())})
        export_model(self.scripted, self.run_dir / "model.pt", meta)
        from mlip.train.plots import write_plots

        write_plots(self, model)


def _summary(loss: float, e_err: list[np.ndarray], f_err: list[np.ndarray]) -> dict[str, float]:
    e = np.concatenate(e_err) if e_err else np.array([])
    f = np.concatenate(f_err) if f_err else np.array([])
    return {"loss": loss, "e_mae": float(e.mean() * 1000) if e.size else math.nan,
            "f_mae": float(f.mean()) if f.size else math.nan}


def _progress_enabled() -> bool:
    return os.environ.get("MLIP_PROGRESS", "1") != "0"


def train(config: dict[str, Any] | None = None, ddp: bool = False) -> Path:
    """Train a new run from a resolved config; returns the run directory."""
    config = config or load_config()
    dist = Distributed.setup(ddp, config["train"]["device"])
    out = config.get("out")
    if out is None:
        sources = config["data"]["sources"]
        name = Path(sources[0]).resolve().name.split(".")[0] if sources else "run"
        out = str(unique_run_dir(Path("runs") / name))
    run_dir = Path(dist.broadcast(out))
    config["out"] = str(run_dir)
    trainer = Trainer(config, run_dir, dist)
    if dist.rank == 0:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    return trainer.fit()


def resume(run_dir: str | Path, ddp: bool = False, overrides: dict[str, Any] | None = None) -> Path:
    """Continue a run from ``run_dir/checkpoints/last.pt``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml", overrides)
    dist = Distributed.setup(ddp, config["train"]["device"])
    trainer = Trainer(config, run_dir, dist)
    if ckpt_path.is_file():
        trainer.load(load_checkpoint(ckpt_path))
    return trainer.fit()
