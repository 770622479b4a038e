"""``mlip train``: train a potential on a folder of dumps (or any readable data)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from mlip.cli import main
from mlip.cli.options import data_options


@main.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config; every key can be overridden by the flags below.")
@click.option("--epochs", type=int, help="Number of epochs (train.epochs).")
@click.option("--device", help="cpu or cuda (train.device).")
@click.option("--val-fraction", type=float, help="Fraction of frames held out (data.val_fraction).")
@click.option("--split-by-source", is_flag=True, default=None,
              help="Hold out whole source files for validation (data.split_by=source).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory (default runs/<data name>, -2, -3 ... if taken); never an existing run "
              "unless --force.")
@click.option("--force", is_flag=True, help="Replace the run already in --out (says what it replaces).")
@click.option("--seed", type=int, help="Random seed (train.seed).")
@click.option("--physics", help="Comma-separated physics terms, e.g. zbl,ewald,d3 (model.physics).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), help="Model precision (model.dtype).")
@click.option("--batch-size", type=int, help="Frames per batch (train.batch_size).")
@click.option("--committee", type=int, metavar="K",
              help="Train a committee of K members on bootstrap resamples, one model.pt with their mean "
                   "and deviation (model.committee; default 1).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set train.lr=1e-3 (YAML value).")
@click.option("--resume", type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this directory from its last checkpoint.")
@click.option("--init", "init", type=click.Path(exists=True, file_okay=False),
              help="Start from this run's model: its weights, normalisation and reference energies (and its "
                   "model settings); new elements in SOURCES get fresh networks (train.init).")
@click.option("--ddp", is_flag=True, help="Distributed data parallel (launch with torchrun).")
@data_options
def train(sources: tuple[str, ...], config_path: str | None, resume: str | None, ddp: bool, force: bool,
          sets: tuple[str, ...], read_options: dict[str, Any], init: str | None, **flags: Any) -> None:
    """Train a potential on SOURCES (dump files, folders, extxyz, ... or a data.h5).

    The config and the data are checked before anything is written. A run's saved
    config.yaml given as --config is a template: it starts a new run next to the old one.
    Ctrl-C (or SIGTERM) saves a checkpoint and says how to resume (exit code 130 or 143).
    All config keys and their meaning: mlip config show.

    \b
    Progress per epoch (environment variable MLIP_PROGRESS):
      unset, 1, auto   a bar when stdout is a terminal, else a line every few epochs
      bar, lines       always a bar, always lines
      0, off           none (what the run is and its summary are still printed)

    \b
    Examples:
      mlip train dumps/
      mlip train dumps/ --types 1=Y --epochs 300 --out runs/yttrium
      mlip train --resume runs/yttrium
      mlip train --config runs/yttrium/config.yaml --epochs 500   # a new run, runs/yttrium-2
      mlip train dumps/ labelled.extxyz --init runs/yttrium --epochs 50   # next active-learning round
      torchrun --nproc_per_node=2 -m mlip train dumps/ --ddp
    """
    from mlip.stop import Stopped, stop_on_signals
    from mlip.train.trainer import Interrupted

    # outside the training loop (reading data, setting up, exporting) SIGINT and SIGTERM stop the
    # command: the set-up removes what it started, and the exit code says which signal
    try:
        with stop_on_signals():
            _train(sources, config_path, resume, ddp, force, sets, read_options, {**flags, "init": init})
    except Interrupted as exc:
        _ignore_signals()
        click.echo(f"mlip: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Stopped as exc:
        _ignore_signals()
        click.echo("mlip: interrupted", err=True)
        sys.exit(128 + exc.signum)


def _ignore_signals() -> None:
    """Once the command stops on a signal, a second SIGINT or SIGTERM (or one still pending)
    must not interrupt the clean-up and the exit with the first signal's code."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _train(sources: tuple[str, ...], config_path: str | None, resume: str | None, ddp: bool, force: bool,
           sets: tuple[str, ...], read_options: dict[str, Any], flags: dict[str, Any]) -> None:
    from mlip.train.config import load_config, parse_overrides
    from mlip.train.init import init_config
    from mlip.train.rundir import unique_run_dir
    from mlip.train.trainer import resume as resume_run
    from mlip.train.trainer import train as train_run

    overrides: dict[str, Any] = {}
    keys = {"epochs": "train.epochs", "device": "train.device", "val_fraction": "data.val_fraction",
            "out": "out", "seed": "train.seed", "dtype": "model.dtype", "batch_size": "train.batch_size",
            "committee": "model.committee"}
    for flag, key in keys.items():
        if flags.get(flag) is not None:
            overrides[key] = flags[flag]
    if flags.get("split_by_source"):
        overrides["data.split_by"] = "source"
    if flags.get("init") is not None:
        overrides["train.init"] = flags["init"]
    if flags.get("physics") is not None:
        overrides["model.physics"] = [p.strip() for p in flags["physics"].split(",") if p.strip()]
    overrides.update(parse_overrides(list(sets)))
    if resume:
        if force:
            raise click.UsageError("--force replaces a run; --resume continues one: give one of them")
        if flags.get("init"):
            raise click.UsageError("--init starts a new run, --resume continues one: give one of them")
        resume_run(resume, ddp=ddp, overrides=overrides, echo=click.echo)
        click.echo(f"run finished: {resume}")
        return
    if sources:
        overrides["data.sources"] = list(sources)
    for key, value in read_options.items():
        overrides[f"data.{key}"] = value
    config = load_config(config_path, overrides)
    if config["train"]["init"]:
        config = init_config(config, overrides)
    template_out = config["out"] if config_path and "out" not in overrides else None
    if template_out and not force and Path(template_out).exists():
        # a saved config names its own run directory: used as a template, it starts a new run
        new = unique_run_dir(Path(config["out"]))
        click.echo(f"{config_path} names {config['out']}, which exists: this new run goes to {new}")
        config["out"] = str(new)
    run_dir = train_run(config, ddp=ddp, force=force, echo=click.echo)
    click.echo(f"run directory: {run_dir}")
