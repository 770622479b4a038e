"""Training configuration: defaults, YAML files, overrides and validation.

The resolved configuration is written to ``config.yaml`` in the run directory and
is enough, with the data, to reproduce and to resume a run.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from mlip.errors import UserError

DEFAULTS: dict[str, Any] = {
    "data": {
        "sources": [],  # files or folders readable by parsers.read
        "types": {},  # LAMMPS type -> element, e.g. {1: "Cu"}
        "energy_column": None,  # per-atom column summed into the energy (e.g. c_pe)
        "log": None,  # log.lammps giving PotEng per timestep
        "format": None,  # force a reader
        "val_fraction": 0.1,
        "split_by": "random",  # or "source": hold out whole files
    },
    "model": {
        "elements": None,  # default: the elements in the data, sorted by Z
        "descriptors": "default",  # or a list of descriptor configs (fingerprints.DescriptorSet)
        "feature_scaling": "block",  # one std per descriptor block, or "feature" (benchmarks/RESULTS.md)
        "hidden": [128, 128],
        "activation": "silu",
        "physics": [],  # names or dicts: zbl, ewald, d3, ...
        "charges": "auto",  # none | network | fixed; auto = network if a term needs charges
        "dtype": "float64",
    },
    "train": {
        "epochs": 250,
        "batch_size": 4,
        "lr": 5.0e-3,
        "min_lr": 1.0e-5,
        "weight_decay": 0.0,
        "scheduler": "cosine",  # or "plateau"
        "plateau_patience": 10,
        "plateau_factor": 0.5,
        "early_stopping": 0,  # stop after this many epochs without validation improvement; 0 = never
        "ema_decay": 0.99,
        "grad_clip": 10.0,
        "energy_weight": 10.0,  # loss weight of MSE(E/N), (eV/atom)^-2 (mlearn-tuned, benchmarks/RESULTS.md)
        "force_weight": 1.0,  # loss weight of MSE(F), (eV/Å)^-2
        "stress_weight": 0.0,  # loss weight of MSE(stress), (eV/Å^3)^-2
        "charge_weight": 0.0,  # loss weight of MSE(q) when reference charges exist, e^-2
        # stage two: the last stage_two_fraction of the epochs train with energy weight
        # stage_two_energy_weight (the force weight unchanged) and best.pt is chosen among them;
        # 0 = off. Stage one's force-heavy loss shapes the potential, stage two fits the energies
        # (mlearn-tuned: benchmarks/RESULTS.md)
        "stage_two_fraction": 0.4,
        "stage_two_energy_weight": 300.0,  # (eV/atom)^-2
        # which EMA weights model.pt gets: "last" (the end of the schedule) or "best" (the epoch of
        # lowest validation loss; that loss is mostly forces, and energies improve after it while
        # the schedule anneals: benchmarks/RESULTS.md)
        "export": "last",
        "checkpoint_every": 5,  # epochs
        "seed": 0,
        "device": "cpu",
        "threads": 0,  # torch threads, 0 = torch's default
    },
    "out": None,  # run directory; default runs/<name of first source>
}


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(choices)}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", ...]`` (the ``--set KEY=VALUE`` flags) -> ``{"train.lr": 0.001, ...}``.

    Values are parsed as YAML; plain numbers such as ``1e-3`` (a string in YAML 1.1) become floats.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        value = yaml.safe_load(text)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        overrides[key.strip()] = value
    return overrides


def merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base``; unknown keys raise UserError
    naming the key and the closest valid one."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise UserError(f"unknown config key '{where}{key}'" + _suggest(key, list(base)))
        if isinstance(base[key], dict) and base[key] and isinstance(value, dict) and key != "types":
            out[key] = merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults ← YAML file ← overrides (nested dicts or dotted keys ``"train.epochs"``)."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping of config keys")
        config = merge(config, loaded)
    for dotted, value in (overrides or {}).items():
        nested: dict[str, Any] = {}
        cur = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
        config = merge(config, nested)
    return config


def save_config(config: dict[str, Any], path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
