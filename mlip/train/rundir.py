"""Run directories: where a new run goes, how it appears, and who may write into it.

A new run is set up in a hidden folder next to its directory (data read, model built, config
saved) and renamed into place only when all of that worked: an existing run directory is never
written into by a new run, except when ``force`` replaces it (and says what it replaced). A
run in progress holds ``RUN/train.lock``, so a second ``--resume`` of it, or a ``--force`` over
it, stops with one line instead of writing into it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlip.errors import UserError
from mlip.fileio import output_lock
from mlip.stop import raise_if_stopped

Echo = Callable[[str], Any]


def unique_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3`` ... whichever does not exist yet."""
    if not base.exists():
        return base
    k = 2
    while base.with_name(f"{base.name}-{k}").exists():
        k += 1
    return base.with_name(f"{base.name}-{k}")


def run_dir_for(config: dict[str, Any], force: bool) -> Path:
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


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/train.lock`` while a run trains; a second holder gets one UserError."""
    try:
        with output_lock(run_dir / "train"):
            yield
    except UserError as exc:
        if "being written by another process" not in str(exc):
            raise
        raise UserError(f"{run_dir} is being trained by another process: wait for it to finish "
                        "(or stop it) first") from None


def describe_run(run_dir: Path) -> str:
    """``a run with 3 trained epochs and its model.pt`` for an existing run directory."""
    metrics = run_dir / "metrics.csv"
    epochs = max(0, len(metrics.read_text().splitlines()) - 1) if metrics.is_file() else 0
    parts = [f"{epochs} trained epoch{'s' * (epochs != 1)}"]
    if (run_dir / "model.pt").is_file():
        parts.append("its model.pt")
    return "a run with " + " and ".join(parts)


def _publish(staging: Path, run_dir: Path, force: bool, echo: Echo) -> None:
    """Rename the new run ``staging`` to ``run_dir``; with ``force`` a run there is replaced
    (unless another process is training it)."""
    if force and run_dir.is_dir() and any(run_dir.iterdir()):
        with run_lock(run_dir):  # only a check: the lock file moves with the folder
            what = describe_run(run_dir)
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


@contextlib.contextmanager
def staged_run(run_dir: Path, force: bool, echo: Echo) -> Iterator[Path]:
    """Yield a hidden folder next to ``run_dir`` to set the new run up in; on success rename it
    to ``run_dir`` (replacing a run there with ``force``). On any failure nothing is left
    behind, not even the parent folders created for it."""
    created = [d for d in (run_dir.parent, *run_dir.parent.parents) if not d.exists()]
    staging = run_dir.with_name(f".{run_dir.name}.new-{os.getpid()}")
    try:
        try:
            staging.mkdir(parents=True)
        except OSError as exc:  # a read-only or full disk: name the folder the user chose
            raise UserError(f"cannot write {run_dir}: {exc.strerror}") from None
        yield staging
        raise_if_stopped()  # a stop that a library swallowed during the set-up
        _publish(staging, run_dir, force, echo)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
