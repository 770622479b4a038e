"""What hangs off the training loop: the metrics file, checkpoints, per-epoch output, plots and
the closing summary. The loop (:class:`mlip.train.trainer.Trainer`) calls them on rank 0."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from mlip.fileio import atomic_write_text
from mlip.model import Potential
from mlip.plots import write_plots

if TYPE_CHECKING:
    from mlip.train.trainer import Trainer

Echo = Callable[[str], Any]

METRIC_FIELDS = ["epoch", "lr", "train_loss", "val_loss", "train_energy_mae_meV_atom", "train_force_mae_eV_A",
                 "val_energy_mae_meV_atom", "val_force_mae_eV_A", "seconds"]


class Callback:
    """Hooks of the loop; each does nothing unless overridden."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float], improved: bool) -> None:
        """After an epoch: its metrics ``row`` (``METRIC_FIELDS``); ``improved``: a new best."""

    def on_fit_end(self, trainer: Trainer, model: Potential, seconds: float) -> None:
        """After ``model.pt`` was written: ``model`` holds its weights; ``seconds`` of training."""

    def close(self) -> None:
        """The loop ends (normally or not)."""


class MetricsCSV(Callback):
    """``metrics.csv``: one row per epoch, rewritten whole (atomically) after each epoch."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float], improved: bool) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(trainer.state.history)
        atomic_write_text(trainer.run_dir / "metrics.csv", text.getvalue())


class Checkpoints(Callback):
    """``checkpoints/best.pt`` at each new best, ``checkpoints/last.pt`` every ``every`` epochs
    and after the last one."""

    def __init__(self, every: int, epochs: int) -> None:
        self.every, self.epochs = every, epochs

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float], improved: bool) -> None:
        if improved:
            trainer.save("best.pt")
        if trainer.state.epoch % self.every == 0 or trainer.state.epoch == self.epochs:
            trainer.save("last.pt")


class Progress(Callback):
    """Per-epoch output: a progress bar, or a plain line every few epochs, or nothing
    (:func:`progress_mode`)."""

    def __init__(self, mode: str, epochs: int, done: int, echo: Echo) -> None:
        self.mode, self.epochs, self.echo = mode, epochs, echo
        self.every = max(1, round(epochs / 20))
        self.bar = tqdm(total=epochs, initial=done, desc="epochs", unit="epoch") if mode == "bar" else None

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float], improved: bool) -> None:
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
            self.bar = None


class Plots(Callback):
    """``learning_curve.png`` and the parity plots of the validation frames."""

    def on_fit_end(self, trainer: Trainer, model: Potential, seconds: float) -> None:
        parity = trainer.parity_set(model)
        write_plots(trainer.run_dir, trainer.state.history, trainer.stage_two_start, parity)


class Summary(Callback):
    """The closing lines: best and last validation errors, what model.pt holds, the time."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo

    def on_fit_end(self, trainer: Trainer, model: Potential, seconds: float) -> None:
        for line in trainer.summary(seconds):
            self.echo(line)


def progress_mode() -> str:
    """``MLIP_PROGRESS``: ``0`` (or off) no per-epoch output, ``bar``, ``lines``; unset (or 1,
    auto): a progress bar when stdout is a terminal, else a line every few epochs."""
    value = os.environ.get("MLIP_PROGRESS", "auto").strip().lower()
    if value in ("0", "off", "no", "false"):
        return "off"
    if value in ("bar", "lines"):
        return value
    return "bar" if sys.stdout.isatty() else "lines"


def default_callbacks(config: dict[str, Any], done: int, echo: Echo) -> list[Callback]:
    """The callbacks of a run on rank 0; ``done``: epochs already trained (resume)."""
    tc = config["train"]
    epochs = int(tc["epochs"])
    return [MetricsCSV(), Checkpoints(int(tc["checkpoint_every"]), epochs),
            Progress(progress_mode(), epochs, done, echo), Plots(), Summary(echo)]
