"""Training configuration: defaults, YAML files, overrides and validation.

The resolved configuration is written to ``config.yaml`` in the run directory and
is enough, with the data, to reproduce and to resume a run. :data:`SCHEMA` gives every key
its check and its meaning (``mlip config show``); :func:`check_config` applies it before
anything is written.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlip.errors import UserError
from mlip.fileio import atomic_write_text

DEFAULTS: dict[str, Any] = {
    "data": {
        "sources": [],  # files or folders readable by parsers.read
        "types": {},  # LAMMPS type -> element, e.g. {1: "Cu"}
        "energy_column": None,  # per-atom column summed into the energy (e.g. c_pe)
        "log": None,  # log.lammps giving PotEng per timestep
        "format": None,  # force a reader
        "energy_key": None,  # extxyz info key of the energy, e.g. REF_energy (None: auto)
        "forces_key": None,  # extxyz array key of the forces, e.g. REF_forces
        "stress_key": None,  # extxyz info key of the stress, e.g. REF_stress
        "val_fraction": 0.1,
        "split_by": "random",  # or "group": stratified by group label; "source": hold out whole files
        "holdout": None,  # a group or source file held out whole for validation (leave-one-family-out)
    },
    "model": {
        "elements": None,  # default: the elements in the data, sorted by Z
        "descriptors": "default",  # or a list of descriptor configs (fingerprints.DescriptorSet)
        "feature_scaling": "block",  # one std per descriptor block, or "feature" (benchmarks/RESULTS.md)
        "hidden": [128, 128],
        "activation": "silu",
        "physics": [],  # names or dicts: zbl, ewald, d3, ...
        "repulsion": "auto",  # auto: ZBL core below the data's shortest pair distances; none
        "charges": "auto",  # none | network | fixed; auto = network if a term needs charges
        "long_range": "none",  # none | ewald_mp | qeq, or {name: ewald_mp, channels: 8, ...}
        "dtype": "float64",
        "committee": 1,  # members K: K >= 2 trains K networks per element on bootstrap resamples
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
        "workers": 0,  # processes that read and batch the training data; 0 = the training process
        "init": None,  # run directory whose weights and normalisation this run starts from (--init)
    },
    "out": None,  # run directory; default runs/<name of first source>
}


@dataclass(frozen=True)
class Rule:
    """What a config value may be: ``convert`` returns the value normalised (a YAML ``1e-3``
    string as a float, a single source as a list) or raises ValueError (the message says
    ``expected ...``) or :class:`Invalid` (its text is the message)."""

    expected: str
    convert: Callable[[Any], Any]


class Invalid(ValueError):
    """A value refused with a message of its own (instead of ``expected ...``)."""


@dataclass(frozen=True)
class Key:
    """One config key: its rule and one line of meaning."""

    rule: Rule
    meaning: str


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(lo: int) -> Rule:
    """An integer ``>= lo`` (booleans and floats are refused)."""

    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError
        return value

    return Rule(f"an integer >= {lo}", convert)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    """A finite number in the interval given (ends closed unless ``*_open``); numeric strings
    such as YAML 1.1's ``1e-3`` are read as numbers."""
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        bounds.append(f"{'<' if hi_open else '<='} {hi:g}")

    def convert(value: Any) -> float:
        if isinstance(value, str):
            value = float(value)  # ValueError for text that is not a number
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise ValueError
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise ValueError
        return float(value)

    return Rule(" ".join(["a number", " and ".join(bounds)]).strip(), convert)


def choice(*names: Any) -> Rule:
    """One of ``names``."""

    def convert(value: Any) -> Any:
        if isinstance(value, bool) or value not in names:
            raise ValueError
        return value

    return Rule("one of " + ", ".join(map(str, names)), convert)


def text(pattern: str | None = None, expected: str = "a string") -> Rule:
    """A string (matching ``pattern`` when given)."""

    def convert(value: Any) -> str:
        if not isinstance(value, str) or not value or (pattern and not re.fullmatch(pattern, value)):
            raise ValueError
        return value

    return Rule(expected, convert)


def optional(rule: Rule) -> Rule:
    """``None`` (null) or ``rule``."""

    def convert(value: Any) -> Any:
        return None if value is None else rule.convert(value)

    return Rule(f"null or {rule.expected}", convert)


def list_of(rule: Rule, expected: str, one_is_list: bool = False) -> Rule:
    """A list whose items follow ``rule``; ``one_is_list``: a single item is read as a list of one."""

    def convert(value: Any) -> list[Any]:
        if one_is_list and not isinstance(value, list | tuple | dict):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError
        return [rule.convert(item) for item in value]

    return Rule(expected, convert)


def _element(value: Any) -> str:
    from ase.data import atomic_numbers

    if not isinstance(value, str) or value not in atomic_numbers or value == "X":
        raise ValueError
    return value


def _types(value: Any) -> dict[int, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError
    out: dict[int, str] = {}
    for key, symbol in value.items():
        type_id = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if not isinstance(type_id, int) or isinstance(type_id, bool) or type_id < 1:
            raise ValueError
        out[type_id] = _element(symbol)
    return out


def _format(value: Any) -> str:
    from parsers.read import normalise_format

    if not isinstance(value, str):
        raise ValueError
    try:
        return normalise_format(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _descriptors(value: Any) -> str | list[dict[str, Any]]:
    if value == "default":
        return value
    if not isinstance(value, list) or not value or \
            not all(isinstance(d, dict) and isinstance(d.get("type"), str) for d in value):
        raise ValueError
    return value


def _physics_term(value: Any) -> str | dict[str, Any]:
    if isinstance(value, str) and value or isinstance(value, dict) and isinstance(value.get("name"), str):
        return value
    raise ValueError


def _charges(value: Any) -> str | bool:
    if isinstance(value, bool):
        return value
    return choice("auto", "none", "network", "fixed").convert(value)


def _widths(value: Any) -> dict[str, float]:
    """Element symbol -> a Gaussian width > 0 (Å)."""
    if not isinstance(value, dict) or not value:
        raise ValueError
    positive = number(0.0, lo_open=True)
    return {_element(symbol): positive.convert(width) for symbol, width in value.items()}


def _screening(value: Any) -> list[float]:
    """[r_in, r_out] (Å) with 0 <= r_in < r_out."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError
    inner, outer = (number(0.0).convert(v) for v in value)
    if not inner < outer:
        raise ValueError
    return [inner, outer]


# long-range model name -> its options and their rules (``model.long_range``)
LONG_RANGE: dict[str, dict[str, Rule]] = {
    "ewald_mp": {"channels": integer(1), "k_cutoff": number(0.0, lo_open=True), "n_radial": integer(1),
                 "mode": choice("auto", "ewald", "pme")},
    "qeq": {"hardness": number(0.0, lo_open=True),
            "widths": Rule("a mapping of element symbols to widths > 0 (Å), e.g. {H: 0.31}", _widths),
            "screening": optional(Rule("[r_in, r_out] in Å with 0 <= r_in < r_out", _screening)),
            "accuracy": number(0.0, 1.0, lo_open=True, hi_open=True), "mode": choice("auto", "ewald", "pme")},
}


def _long_range(value: Any) -> str | dict[str, Any]:
    """``none``, a name of :data:`LONG_RANGE`, or a mapping with its ``name`` and options."""
    if value == "none" or isinstance(value, str) and value in LONG_RANGE:
        return value
    if not isinstance(value, dict) or value.get("name") not in LONG_RANGE:
        raise ValueError
    rules = LONG_RANGE[value["name"]]
    out: dict[str, Any] = {"name": value["name"]}
    for key, option in value.items():
        if key == "name":
            continue
        if key not in rules:
            raise Invalid(f"unknown option {key!r} of {value['name']}; options: {', '.join(rules)}")
        try:
            out[key] = rules[key].convert(option)
        except ValueError:
            expected = rules[key].expected
            raise Invalid(f"{value['name']} option {key} = {option!r}: expected {expected}") from None
    return out


def _activations() -> tuple[str, ...]:
    from mlip.model.activations import NAMES

    return NAMES


_OPTIONAL_TEXT = optional(text())
_WEIGHT = number(0.0)

SCHEMA: dict[str, Key] = {
    "data.sources": Key(list_of(text(), "a list of files or folders", one_is_list=True),
                        "files or folders of training data (anything parsers.read reads, or one data.h5)"),
    "data.types": Key(Rule("a mapping of LAMMPS types to element symbols, e.g. {1: Cu}", _types),
                      "LAMMPS atom type -> element, e.g. {1: Cu} (--types 1=Cu)"),
    "data.energy_column": Key(_OPTIONAL_TEXT, "per-atom dump column summed into the frame energy, e.g. c_pe"),
    "data.log": Key(_OPTIONAL_TEXT, "log.lammps whose thermo PotEng gives each dump frame's energy"),
    "data.format": Key(optional(Rule("a known data format", _format)),
                       "force a reader (lammps-dump, extxyz, ...); null = detect from name and content"),
    "data.energy_key": Key(_OPTIONAL_TEXT, "extxyz info key of the energy; null = the reader's default"),
    "data.forces_key": Key(_OPTIONAL_TEXT, "extxyz array key of the forces; null = the reader's default"),
    "data.stress_key": Key(_OPTIONAL_TEXT, "extxyz info key of the stress; null = the reader's default"),
    "data.val_fraction": Key(number(0.0, 1.0, hi_open=True),
                             "fraction of the frames held out for validation"),
    "data.split_by": Key(choice("random", "group", "source"),
                         "validation frames: random, a random share of each group (group, stratified), "
                         "or whole source files (source)"),
    "data.holdout": Key(_OPTIONAL_TEXT,
                        "a group or source file (1NN.dump or 1NN) held out whole for validation, never "
                        "trained on; the other frames are split by split_by; null = none"),
    "model.elements": Key(optional(list_of(Rule("an element symbol", _element), "a list of element symbols")),
                          "elements of the model; null = those in the data, sorted by Z"),
    "model.descriptors": Key(Rule("'default' or a list of descriptor configs, each with a 'type'",
                                  _descriptors),
                             "'default' (power spectrum + radial density, cutoff from the elements) "
                             "or a list of descriptor configs"),
    "model.feature_scaling": Key(choice("block", "feature"),
                                 "descriptor normalisation: one std per descriptor block, or per feature"),
    "model.hidden": Key(list_of(integer(1), "a list of integers >= 1, e.g. [64, 64]"),
                        "widths of the hidden layers of each element's network"),
    "model.activation": Key(Rule("an activation name", lambda v: choice(*_activations()).convert(v)),
                            "activation of the hidden layers (silu, tanh, softplus, ...)"),
    "model.physics": Key(list_of(Rule("a name or a mapping with a 'name'", _physics_term),
                                 "a list of physics term names or mappings with a 'name'"),
                         "physics terms added to the network energy: zbl, ewald, d3, d4, ..."),
    "model.repulsion": Key(choice("auto", "none"),
                           "auto: a ZBL core switched on below each element pair's shortest distance in "
                           "the training data, the network's view frozen there (mlip.physics.core); none"),
    "model.charges": Key(Rule("one of auto, none, network, fixed", _charges),
                         "atomic charges: none, network, fixed; auto = network if a physics term "
                         "needs charges"),
    "model.long_range": Key(Rule("none, ewald_mp, or a mapping with name: ewald_mp and its options "
                                 "channels, k_cutoff, n_radial, mode; or qeq, or a mapping with name: qeq "
                                 "and its options hardness, widths, screening, accuracy, mode", _long_range),
                            "learned long range: none; ewald_mp (Ewald message passing: C channels of "
                            "learned embeddings, radial filters of |k| up to k_cutoff 1/Å from n_radial "
                            "Gaussians; mlip.physics.ewald_mp); or qeq (a 4G-HDNNP: networks give "
                            "electronegativities, charges from a charge equilibration with learned "
                            "hardnesses, initial hardness eV/e², and Gaussian widths Å, default the covalent "
                            "radii; short-range networks see the charges; optional screening [r_in, r_out] Å "
                            "of close pairs; Coulomb accuracy and mode; mlip.model.qeq_potential)"),
    "model.dtype": Key(choice("float64", "float32"), "precision of the model and of training"),
    "model.committee": Key(integer(1), "committee members K: K >= 2 trains K per-element networks on the "
                                       "shared descriptors, each on its own bootstrap resample of the "
                                       "training frames; model.pt predicts their mean and deviation"),
    "train.epochs": Key(integer(1), "number of epochs"),
    "train.batch_size": Key(integer(1), "frames per batch"),
    "train.lr": Key(number(0.0, lo_open=True), "initial learning rate (AdamW)"),
    "train.min_lr": Key(number(0.0), "lowest learning rate of the schedule"),
    "train.weight_decay": Key(number(0.0), "AdamW weight decay"),
    "train.scheduler": Key(choice("cosine", "plateau"),
                           "learning-rate schedule: cosine annealing, or reduce on a validation plateau"),
    "train.plateau_patience": Key(integer(0), "plateau scheduler: epochs without improvement before a cut"),
    "train.plateau_factor": Key(number(0.0, 1.0, lo_open=True, hi_open=True),
                                "plateau scheduler: factor of each learning-rate cut"),
    "train.early_stopping": Key(integer(0),
                                "stop after this many epochs without validation improvement; 0 = never"),
    "train.ema_decay": Key(number(0.0, 1.0, hi_open=True),
                           "decay of the moving average of the weights that is evaluated and exported"),
    "train.grad_clip": Key(number(0.0), "largest gradient norm; 0 = no clipping"),
    "train.energy_weight": Key(_WEIGHT, "loss weight of MSE(E/N), (eV/atom)^-2"),
    "train.force_weight": Key(_WEIGHT, "loss weight of MSE(F), (eV/Å)^-2"),
    "train.stress_weight": Key(_WEIGHT, "loss weight of MSE(stress), (eV/Å^3)^-2; 0 = stress not used"),
    "train.charge_weight": Key(_WEIGHT, "loss weight of MSE(q) when reference charges exist, e^-2"),
    "train.stage_two_fraction": Key(number(0.0, 1.0),
                                    "last fraction of the epochs, trained at stage_two_energy_weight; "
                                    "0 = off"),
    "train.stage_two_energy_weight": Key(_WEIGHT, "energy loss weight of stage two, (eV/atom)^-2"),
    "train.export": Key(choice("last", "best"),
                        "EMA weights model.pt gets: the last epoch's, or the best validation epoch's"),
    "train.checkpoint_every": Key(integer(1), "epochs between checkpoints/last.pt writes"),
    "train.seed": Key(integer(0), "random seed of the initial weights, the split and the batch order"),
    "train.device": Key(text(r"cpu|cuda(:\d+)?|mps", "cpu, cuda, cuda:N or mps"), "torch device"),
    "train.threads": Key(integer(0), "torch threads; 0 = torch's default"),
    "train.workers": Key(integer(0), "DataLoader worker processes that read frames from data.h5 and build "
                                     "the batches; 0 = the training process does it"),
    "train.init": Key(_OPTIONAL_TEXT, "run directory whose weights, normalisation and reference energies "
                                      "this run starts from (mlip train --init RUN); null = fresh"),
    "out": Key(_OPTIONAL_TEXT, "run directory; null = runs/<name of the first source> (-2, -3 ... if taken)"),
}
"""Every config key, dotted (``train.epochs``), with its rule and meaning. A config lacking one
of them (an older run's, without ``data.energy_key`` ...) is checked on the keys it has."""

SECTIONS = ("data", "model", "train")


def leaves(config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every key of a config, section by section in order."""
    for name, value in config.items():
        if name in SECTIONS and isinstance(value, dict):
            for key, item in value.items():
                yield f"{name}.{key}", item
        else:
            yield name, value


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key against :data:`SCHEMA`; return a copy with the values normalised.

    Raises UserError naming the key, the value and what is expected, e.g.
    ``train.epochs = 'abc': expected an integer >= 1``.
    """
    out = copy.deepcopy(config)
    for section in SECTIONS:
        if not isinstance(out.get(section), dict):
            raise UserError(f"{section} = {out.get(section)!r}: expected a mapping of {section} keys")
    for dotted, value in leaves(out):
        key = SCHEMA.get(dotted)
        if key is None:
            continue
        try:
            converted = key.rule.convert(value)
        except (ValueError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, Invalid) else f"expected {key.rule.expected}"
            raise UserError(f"{dotted} = {value!r}: {reason}") from None
        section, _, name = dotted.rpartition(".")
        (out[section] if section else out)[name] = converted
    return out


def describe_defaults() -> str:
    """DEFAULTS as YAML with each key's meaning as a comment (``mlip config show``)."""
    lines: list[str] = []
    current = ""
    for dotted, value in leaves(DEFAULTS):
        section, _, name = dotted.rpartition(".")
        if section and section != current:
            lines.append(f"{section}:")
        current = section
        shown = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000)
        shown = shown.removesuffix("\n...\n").strip()  # a scalar's document-end marker
        entry = f"{'  ' if section else ''}{name}: {shown}"
        meaning = SCHEMA[dotted].meaning if dotted in SCHEMA else ""
        lines.append(f"{entry:<36} # {meaning}" if meaning else entry)
    return "\n".join(lines)


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
    return check_config(config)



def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's saved ``config.yaml`` (then ``overrides``), for resuming or exporting it. Keys the
    run predates keep the behaviour it was trained with, not today's default: a run saved
    without ``model.repulsion`` had no repulsive core (``none``)."""
    saved = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    model = saved.get("model") if isinstance(saved, dict) else None
    implied = {"model.repulsion": "none"} if isinstance(model, dict) and "repulsion" not in model else {}
    return load_config(path, {**implied, **(overrides or {})})

def save_config(config: dict[str, Any], path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
