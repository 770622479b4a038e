"""Import n2p2 / RuNNer Behler–Parrinello potentials (2G HDNNPs) as an ordinary :class:`Potential`.

A model directory holds ``input.nn`` (settings), ``scaling.data`` (symmetry-function statistics)
and one weight file per element, ``weights.ZZZ.data`` with ZZZ the atomic number (n2p2's
``nnp-predict``/LAMMPS naming). n2p2's trainer writes ``weights.ZZZ.EEEEEE.out`` after every
epoch EEEEEE; :func:`load` takes those with ``epoch=N``, and falls back to the highest epoch when
a directory has no ``.data`` files.

What is read, and how it maps onto mlip:

- ``symfunction_short`` lines of types 2 (G2), 3 (narrow angular G4) and 9 (wide angular G5),
  ``cutoff_type CODE [ALPHA]`` -> :class:`fingerprints.acsf.ACSF` (``functions`` mode, one list
  per centre element). n2p2 sorts each element's list (centre element, type, rc, eta, rs, zeta,
  lambda, neighbour elements, as its ``SymFnc*::operator<``); ``scaling.data`` and the input
  layer of the networks index that sorted order, so the list is sorted the same way here.
- ``scaling.data`` (``element sf Gmin Gmax Gmean [Gsigma]``) with ``scale_symmetry_functions``,
  ``center_symmetry_functions``, ``scale_symmetry_functions_sigma``, ``scale_min_short`` and
  ``scale_max_short`` -> the per-element ``mean``/``std`` of the
  :class:`~fingerprints.descriptor_set.DescriptorSet`: n2p2's scaled value
  ``Smin + f (G - G0)`` equals ``(G - mean) / std`` with ``std = 1/f`` and
  ``mean = G0 - Smin/f``.
- ``global_hidden_layers_short``, ``global_nodes_short``, ``global_activation_short`` (codes
  ``t l s p``, one per hidden layer plus the output) and the weight files ->
  :class:`~mlip.model.ElementNetworks` (one ``Linear``/``Activation`` stack per element; an
  element with fewer symmetry functions than another gets zero input weights on the padding
  columns).
- Energies: n2p2 predicts, in the file's energy unit, ``E_i = NN_i / conv_energy + mean_energy
  + atom_energy[element]`` (``conv_energy``, ``mean_energy`` only with ``normalize``; atom energies
  from ``atom_energy`` lines, default 0). The potential's ``energy_scale`` and ``energy_shift``
  carry this times ``energy_unit`` (eV per file unit).
- Lengths: SF parameters are in the file's length unit and become Å with ``length_unit``
  (rc, rs times it, eta divided by its square). ``conv_length`` scales positions and SF
  parameters alike, so symmetry-function values do not depend on it and it is not read.

Units: ``length_unit`` (Å per file length unit) and ``energy_unit`` (eV per file energy unit)
default to Bohr and Hartree of CODATA 2014 (0.52917721067 Å, 27.21138602 eV), the values the
published mlearn NNPs (Zuo et al. 2020) were trained with; CODATA 2018 values change those
models' energies by about 3e-8 eV/atom.

4G-HDNNPs (``nnp_generation 4``) are imported by :mod:`mlip.interop.n2p2_4g` (:func:`load` and
:func:`export` hand them over). Unsupported settings (3G charge networks, per-element
architectures, ``normalize_nodes`` ...) raise :class:`~mlip.errors.UserError` naming the keyword
and the ``input.nn`` line. Weight files may be annotated (n2p2's ``value a|b INDEX ...`` lines) or
bare values in n2p2's order (RuNNer's files, :func:`read_weights`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fingerprints.descriptor_set import DescriptorSet
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.model import Activation, Potential
from parsers.elements import atomic_number
from parsers.units import BOHR_CODATA2014, HARTREE_CODATA2014

BOHR_ANGSTROM, HARTREE_EV = BOHR_CODATA2014, HARTREE_CODATA2014  # what n2p2 models were fitted with

SUPPORTED_ACTIVATIONS = ("t", "l", "s", "p")
# n2p2 cutoff_type codes that fingerprints.acsf implements (cos, tanhu, tanh, exp, poly1..poly4).
SUPPORTED_CUTOFFS = (1, 2, 3, 4, 5, 6, 7, 8)
# Keywords whose presence means a model this importer cannot represent (keyword -> reason).
UNSUPPORTED_KEYWORDS = {
    "electrostatic_type": "long-range electrostatics (3G/4G HDNNP)",
    "use_electrostatics": "long-range electrostatics (RuNNer 3G/4G)",
    "symfunction_electrostatic": "charge-network symmetry functions (3G/4G HDNNP)",
    "global_hidden_layers_electrostatic": "charge networks (3G/4G HDNNP)",
    "element_hidden_layers_short": "per-element network architectures",
    "element_nodes_short": "per-element network architectures",
    "element_activation_short": "per-element network architectures",
    "normalize_nodes": "neuron normalisation by the number of inputs",
    "use_vdw": "dispersion terms",
    "vdw_type": "dispersion terms",
}
# ``symfunction_short`` and RuNNer's ``symfunction`` (the 4G reference models use the latter)
SYMFUNCTION_KEYWORDS = ("symfunction_short", "symfunction")
GENERATION_KEYWORDS = ("nnp_generation", "nnp_gen", "nnp_type_gen")


@dataclass
class SymmetryFunction:
    """One ``symfunction_short`` line; lengths in the file's unit."""

    center: str
    type: int
    neighbors: list[str]
    eta: float
    rs: float
    rc: float
    zeta: float = 0.0
    lam: float = 0.0

    def sort_key(self) -> tuple:
        """n2p2's order within one centre element (``SymFnc*::operator<``)."""
        z = [atomic_number(e) for e in self.neighbors]
        return (self.type, self.rc, self.eta, self.rs, self.zeta, self.lam, z)


@dataclass
class Settings:
    """What :func:`read_settings` takes from ``input.nn`` (lengths and energies in the file's units)."""

    elements: list[str]
    functions: dict[str, list[SymmetryFunction]]  # per centre element, in n2p2's sorted order
    hidden: list[int]
    activations: list[str]  # one per hidden layer, then the output layer
    cutoff_type: int = 1
    cutoff_alpha: float = 0.0
    scaling: str = "none"  # none | scale | center | scalecenter | scalesigma
    scale_min: float = 0.0
    scale_max: float = 1.0
    mean_energy: float = 0.0
    conv_energy: float = 1.0
    atom_energy: dict[str, float] = field(default_factory=dict)


def line_error(path: Path, line: int, message: str) -> UserError:
    return UserError(f"{path}:{line}: {message}")


def parse_number(path: Path, line: int, word: str, what: str, kind: type = float) -> float:
    try:
        return kind(word)
    except ValueError:
        raise line_error(path, line, f"{what}: expected a number, got {word!r}") from None


def _parse_symmetry_function(path: Path, line: int, words: list[str],
                             elements: list[str]) -> SymmetryFunction:
    """``symfunction_short EC 2 E1 eta rs rc`` or ``EC 3|9 E1 E2 eta lambda zeta rc [rs]``."""
    if len(words) < 4:
        raise line_error(path, line, "symfunction_short needs a centre element, a type and neighbour "
                                     "elements")
    kind = int(parse_number(path, line, words[2], "symmetry function type", int))
    if kind not in (2, 3, 9):
        raise line_error(path, line, f"symmetry function type {kind} is not supported (types 2, 3 and 9 are)")
    for el in words[1:2] + words[3:4 if kind == 2 else 5]:
        if el not in elements:
            raise line_error(path, line, f"element {el!r} is not one of the elements {elements}")
    if kind == 2:
        if len(words) != 7:
            raise line_error(path, line, "type 2 symmetry function needs: EC 2 E1 eta rs rc")
        eta, rs, rc = (parse_number(path, line, w, "type 2 parameter") for w in words[4:7])
        return SymmetryFunction(words[1], 2, [words[3]], eta, rs, rc)
    if len(words) not in (9, 10):
        raise line_error(path, line, f"type {kind} symmetry function needs: EC {kind} E1 E2 eta lambda "
                                 "zeta rc [rs]")
    eta, lam, zeta, rc = (parse_number(path, line, w, f"type {kind} parameter") for w in words[5:9])
    rs = parse_number(path, line, words[9], "rs") if len(words) == 10 else 0.0
    neighbors = sorted(words[3:5], key=atomic_number)
    return SymmetryFunction(words[1], kind, neighbors, eta, rs, rc, zeta=zeta, lam=lam)


def read_keywords(path: str | Path) -> list[tuple[int, str, list[str]]]:
    """The keyword lines of an ``input.nn``: (line number, keyword in lower case, its words), in
    file order, comments (``#``, or RuNNer's ``!``, to the end of a line) and blank lines left out."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"n2p2 settings file not found: {path}")
    lines = []
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        words = raw.split("#", 1)[0].split("!", 1)[0].split()
        if words:
            lines.append((n, words[0].lower(), words[1:]))
    return lines


def generation(path: str | Path) -> tuple[int, int]:
    """The HDNNP generation that ``input.nn`` declares (``nnp_generation``, or RuNNer's
    ``nnp_gen``/``nnp_type_gen``; 2 without one) and the line that declares it (0: none)."""
    for n, key, words in read_keywords(path):
        if key in GENERATION_KEYWORDS:
            if not words:
                raise line_error(Path(path), n, f"{key} needs a value")
            return int(parse_number(Path(path), n, words[0], key, int)), n
    return 2, 0


def architecture(path: Path, keywords: dict[str, tuple[int, list[str]]],
                 kind: str = "short") -> tuple[list[int], list[str]]:
    """Hidden widths and activation codes (one per hidden layer, then the output's) of the
    networks ``kind`` (``short``, or ``electrostatic`` for 4G electronegativities) from the
    ``global_*_KIND`` keywords (keyword -> (line, words)) of the settings file ``path``."""
    def get(key: str) -> tuple[int, list[str]]:
        if key not in keywords:
            raise UserError(f"{path}: keyword {key!r} is missing")
        line, words = keywords[key]
        if not words:
            raise line_error(path, line, f"{key} needs a value")
        return line, words

    key = f"global_hidden_layers_{kind}"
    line, words = get(key)
    n_hidden = int(parse_number(path, line, words[0], key, int))
    key = f"global_nodes_{kind}"
    line, words = get(key)
    hidden = [int(parse_number(path, line, w, key, int)) for w in words]
    if len(hidden) != n_hidden:
        raise line_error(path, line, f"{key} has {len(hidden)} widths for {n_hidden} hidden layers")
    key = f"global_activation_{kind}"
    line, activations = get(key)
    if len(activations) != n_hidden + 1:
        raise line_error(path, line, f"{key} needs {n_hidden + 1} codes (hidden layers and output), "
                                 f"got {len(activations)}")
    for code in activations:
        if code not in SUPPORTED_ACTIVATIONS:
            raise line_error(path, line, f"{key}: activation {code!r} is not supported "
                                     f"(supported: {' '.join(SUPPORTED_ACTIVATIONS)})")
    return hidden, list(activations)


def read_settings(path: str | Path, allow: Collection[str] = ()) -> Settings:
    """Read the parts of n2p2's ``input.nn`` that define the potential (module docstring).
    Keywords in ``allow`` are not rejected as unsupported (the 4G importer reads them itself)."""
    path = Path(path)
    keywords: dict[str, tuple[int, list[str]]] = {}
    sf_lines: list[tuple[int, list[str]]] = []
    atom_energy: dict[str, float] = {}
    for n, key, args in read_keywords(path):
        words = [key, *args]
        if key in UNSUPPORTED_KEYWORDS and key not in allow:
            raise line_error(path, n, f"keyword {key!r} is not supported: {UNSUPPORTED_KEYWORDS[key]}")
        if key in SYMFUNCTION_KEYWORDS:
            sf_lines.append((n, words))
        elif key == "atom_energy":
            if len(words) != 3:
                raise line_error(path, n, "atom_energy needs: ELEMENT ENERGY")
            atom_energy[words[1]] = parse_number(path, n, words[2], "atom_energy")
        else:
            keywords[key] = (n, args)

    def get(key: str, required: bool = False) -> tuple[int, list[str]] | None:
        if required and key not in keywords:
            raise UserError(f"{path}: keyword {key!r} is missing")
        return keywords.get(key)

    for key, allowed in (("nnp_type", "2"), ("nn_type_short", "1")):
        if key in allow:
            continue
        entry = get(key)
        if entry is not None and entry[1][:1] != [allowed]:
            raise line_error(path, entry[0], f"keyword {key!r} = {' '.join(entry[1])} is not supported "
                                         f"(only {allowed}: a short-range HDNNP, one network per element)")
    line, words = get("elements", required=True)
    try:
        elements = sorted(words, key=atomic_number)
    except ValueError as exc:
        raise line_error(path, line, f"elements: {exc}") from None
    if not elements:
        raise line_error(path, line, "elements: no element given")
    entry = get("number_of_elements")
    if entry is not None \
            and parse_number(path, entry[0], entry[1][0], "number_of_elements", int) != len(elements):
        raise line_error(path, entry[0], f"number_of_elements does not match the {len(elements)} elements")

    hidden, activations = architecture(path, keywords, "short")

    settings = Settings(elements, {e: [] for e in elements}, hidden, activations)
    entry = get("cutoff_type")
    if entry is not None:
        line, words = entry
        settings.cutoff_type = int(parse_number(path, line, words[0], "cutoff_type", int))
        if settings.cutoff_type not in SUPPORTED_CUTOFFS:
            raise line_error(path, line, f"cutoff_type {settings.cutoff_type} is not supported "
                                     f"(supported: {SUPPORTED_CUTOFFS})")
        if len(words) > 1:
            settings.cutoff_alpha = parse_number(path, line, words[1], "cutoff_type alpha")
    scale = "scale_symmetry_functions" in keywords
    center = "center_symmetry_functions" in keywords
    if "scale_symmetry_functions_sigma" in keywords:
        settings.scaling = "scalesigma"
    elif scale or center:
        settings.scaling = "scalecenter" if scale and center else "scale" if scale else "center"
    for key, attr in (("scale_min_short", "scale_min"), ("scale_max_short", "scale_max"),
                      ("mean_energy", "mean_energy"), ("conv_energy", "conv_energy")):
        entry = get(key)
        if entry is not None:
            if attr in ("mean_energy", "conv_energy") and "normalize" not in keywords:
                continue  # n2p2 uses them only with ``normalize``
            setattr(settings, attr, parse_number(path, entry[0], entry[1][0], key))
    for el, value in atom_energy.items():
        if el not in elements:
            raise UserError(f"{path}: atom_energy for {el!r}, which is not one of the elements {elements}")
        settings.atom_energy[el] = value

    for line, words in sf_lines:
        sf = _parse_symmetry_function(path, line, words, elements)
        settings.functions[sf.center].append(sf)
    for el in elements:
        if not settings.functions[el]:
            raise UserError(f"{path}: no symmetry functions for element {el}")
        settings.functions[el].sort(key=SymmetryFunction.sort_key)
    return settings


def read_scaling(path: str | Path, settings: Settings) -> dict[str, torch.Tensor]:
    """``scaling.data``: per element an (n_sf, 4) float64 tensor of Gmin, Gmax, Gmean, Gsigma
    (sigma NaN where the file has none), rows in n2p2's SF order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"n2p2 scaling file not found: {path}")
    rows: dict[tuple[int, int], list[float]] = {}
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) in (2, 3):  # RuNNer's closing line of energy statistics (2 values: 4G models)
            continue
        if len(words) not in (5, 6):
            raise line_error(path, n, "expected: element sf Gmin Gmax Gmean [Gsigma]")
        e, s = (int(parse_number(path, n, w, "index", int)) for w in words[:2])
        values = [parse_number(path, n, w, "statistic") for w in words[2:]] + [math.nan] * (6 - len(words))
        rows[(e, s)] = values
    out: dict[str, torch.Tensor] = {}
    for e, el in enumerate(settings.elements, start=1):
        n_sf = len(settings.functions[el])
        missing = [s for s in range(1, n_sf + 1) if (e, s) not in rows]
        if missing:
            raise UserError(f"{path}: no statistics for element {e} ({el}) symmetry function(s) {missing}")
        out[el] = torch.tensor([rows[(e, s)] for s in range(1, n_sf + 1)], dtype=torch.float64)
    extra = sorted(set(rows) - {(e, s) for e, el in enumerate(settings.elements, start=1)
                                for s in range(1, len(settings.functions[el]) + 1)})
    if extra:
        raise UserError(f"{path}: statistics for symmetry functions the settings do not define: {extra[:5]}")
    return out


def read_weights(path: str | Path, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """An n2p2 weight file for layer sizes ``sizes`` (inputs, hidden..., 1): per layer
    (weight (n_out, n_in), bias (n_out,)) float64.

    Lines: ``value a INDEX LAYER_FROM NODE_FROM LAYER_TO NODE_TO`` (a connection) or
    ``value b INDEX LAYER NODE`` (a bias); layers count from 0 (input), nodes from 1. Every
    connection and bias must appear exactly once. A file of bare values (RuNNer's, and the
    published 4G models') lists them in n2p2's order instead: per layer, the connections
    ordered by source node, then target node, then the biases of the target layer.
    """
    path = Path(path)
    layers = range(len(sizes) - 1)
    weights = [torch.full((sizes[k + 1], sizes[k]), math.nan, dtype=torch.float64) for k in layers]
    biases = [torch.full((sizes[k + 1],), math.nan, dtype=torch.float64) for k in layers]
    slots = [s for k in layers
             for s in [(weights[k], (t, f)) for f in range(sizes[k]) for t in range(sizes[k + 1])]
             + [(biases[k], (t,)) for t in range(sizes[k + 1])]]
    n_bare = 0
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        value = parse_number(path, n, words[0], "weight")
        if len(words) == 1:
            if n_bare == len(slots):
                raise line_error(path, n, f"more weights than layer sizes {sizes} have ({len(slots)})")
            target, index = slots[n_bare]
            n_bare += 1
        elif len(words) == 7 and words[1] == "a":
            lf, nf, lt, nt = (int(parse_number(path, n, w, "index", int)) for w in words[3:7])
            if lt != lf + 1 or not (0 <= lf < len(weights) and 1 <= nf <= sizes[lf] and 1 <= nt <= sizes[lt]):
                raise line_error(path, n, f"connection {lf}:{nf} -> {lt}:{nt} does not fit layer sizes "
                                          f"{sizes}")
            target, index = weights[lf], (nt - 1, nf - 1)
        elif len(words) == 5 and words[1] == "b":
            layer, node = (int(parse_number(path, n, w, "index", int)) for w in words[3:5])
            if not (1 <= layer < len(sizes) and 1 <= node <= sizes[layer]):
                raise line_error(path, n, f"bias {layer}:{node} does not fit layer sizes {sizes}")
            target, index = biases[layer - 1], (node - 1,)
        else:
            raise line_error(path, n, "expected 'value a INDEX L_FROM N_FROM L_TO N_TO', 'value b INDEX L N' "
                                  "or a bare value")
        if not math.isnan(float(target[index])):
            raise line_error(path, n, "this weight is given twice")
        target[index] = value
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if torch.isnan(w).any() or torch.isnan(b).any():
            raise UserError(f"{path}: weights of layer {k} -> {k + 1} are incomplete for layer sizes {sizes} "
                            "(does the file belong to these settings?)")
    return list(zip(weights, biases, strict=True))


def set_network(net: torch.nn.Sequential, layers: list[tuple[torch.Tensor, torch.Tensor]],
                activations: list[str]) -> None:
    """Load n2p2 ``layers`` (:func:`read_weights`) into ``net``, an :func:`~mlip.model.networks.mlp`
    at least as wide at its input (extra input columns get zero weights), with n2p2's activation
    codes ``activations`` (one per hidden layer, then the output's)."""
    with torch.no_grad():
        for k, (w, b) in enumerate(layers):
            linear = net[2 * k]
            linear.weight.zero_()
            linear.weight[:, : w.shape[1]] = w
            linear.bias.copy_(b)
            if k < len(layers) - 1:
                net[2 * k + 1] = Activation(activations[k])
        if activations[-1] != "l":
            net.append(Activation(activations[-1]))


def weight_files(directory: str | Path, elements: list[str], epoch: int | None = None,
                 prefix: str = "weights") -> dict[str, Path]:
    """The weight file of each element: ``weights.ZZZ.data``, or with ``epoch`` the trainer's
    ``weights.ZZZ.EEEEEE.out``; without ``epoch`` and without ``.data`` files, the highest epoch
    for which every element has a file. ``prefix``: ``weights`` (energy networks) or
    ``weightse`` (a 4G model's electronegativity networks)."""
    directory = Path(directory)
    stem = {el: f"{prefix}.{atomic_number(el):03d}" for el in elements}
    if epoch is None:
        data = {el: directory / f"{stem[el]}.data" for el in elements}
        if all(p.is_file() for p in data.values()):
            return data
        epochs = None
        for el in elements:
            found = {int(m.group(1)) for p in directory.glob(f"{stem[el]}.*.out")
                     if (m := re.fullmatch(re.escape(stem[el]) + r"\.(\d+)\.out", p.name))}
            epochs = found if epochs is None else epochs & found
        if not epochs:
            missing = [p.name for p in data.values() if not p.is_file()]
            raise UserError(f"{directory}: no n2p2 weight files ({', '.join(missing)}, nor "
                            f"{prefix}.ZZZ.EEEEEE.out of one epoch for every element)")
        epoch = max(epochs)
    files = {el: directory / f"{stem[el]}.{epoch:06d}.out" for el in elements}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"{directory}: weight file(s) of epoch {epoch} not found: {', '.join(missing)}")
    return files


def acsf_config(settings: Settings, length_unit: float) -> dict:
    """The ``acsf`` descriptor config entry (Å-based parameters, each element's own sorted list)."""
    functions = []
    for el in settings.elements:
        for sf in settings.functions[el]:
            entry = {"type": sf.type, "center": el, "neighbors": list(sf.neighbors),
                     "eta": sf.eta / length_unit**2, "rs": sf.rs * length_unit, "rc": sf.rc * length_unit}
            if sf.type != 2:
                entry.update({"zeta": sf.zeta, "lambda": sf.lam})
            functions.append(entry)
    return {"type": "acsf", "functions": functions, "cutoff_type": settings.cutoff_type,
            "cutoff_alpha": settings.cutoff_alpha}


def normalisation(settings: Settings, stats: torch.Tensor, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (n_sf,), with (G - mean) / std equal to n2p2's scaled G."""
    gmin, gmax, gmean, gsigma = stats.unbind(1)
    n = stats.shape[0]
    if settings.scaling == "none":
        return torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    if settings.scaling == "center":
        return gmean, torch.ones(n, dtype=torch.float64)
    spread = gsigma if settings.scaling == "scalesigma" else gmax - gmin
    bad = torch.nonzero(~(spread > 0)).squeeze(1).tolist()
    if bad:
        what = "Gsigma" if settings.scaling == "scalesigma" else "Gmax - Gmin"
        raise UserError(f"{where}: {what} is not positive for symmetry function(s) {[b + 1 for b in bad]}, "
                        "so n2p2's scaling is undefined")
    std = spread / (settings.scale_max - settings.scale_min)
    origin = gmin if settings.scaling == "scale" else gmean
    return origin - settings.scale_min * std, std


def model_generation(directory: str | Path) -> int:
    """The generation (2 or 4) of the model in ``directory``, from its ``input.nn``. Other
    generations, and a 2G ``input.nn`` beside 4G files (``weightse.*``, ``hardness.*``), are an
    error naming the settings file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"n2p2 model directory not found: {directory}")
    path = directory / "input.nn"
    gen, line = generation(path)
    if gen not in (2, 4):
        raise line_error(path, line, f"nnp_generation {gen} is not supported (2G and 4G HDNNPs are)")
    found = sorted(p.name for pattern in ("weightse.*", "hardness.*") for p in directory.glob(pattern))
    if gen == 2 and found:
        raise UserError(f"{path}: does not declare 'nnp_generation 4', but the directory holds 4G-HDNNP "
                        f"files ({', '.join(found[:3])}{' ...' if len(found) > 3 else ''})")
    return gen


def load(directory: str | Path, epoch: int | None = None, length_unit: float = BOHR_ANGSTROM,
         energy_unit: float = HARTREE_EV) -> Potential:
    """An n2p2 model directory as a float64 :class:`Potential` in Å and eV.

    ``directory`` holds ``input.nn``, ``scaling.data`` and the weight files (see
    :func:`weight_files` for ``epoch``). ``length_unit``: Å per length unit of the files;
    ``energy_unit``: eV per energy unit of the files (defaults: Bohr, Hartree; module docstring).
    """
    if model_generation(directory) == 4:
        from mlip.interop import n2p2_4g

        return n2p2_4g.load(directory, epoch, length_unit, energy_unit)
    directory = Path(directory)
    if not (length_unit > 0 and energy_unit > 0):
        raise UserError(f"length_unit and energy_unit must be > 0, got {length_unit} Å and {energy_unit} eV")
    settings = read_settings(directory / "input.nn")
    stats = read_scaling(directory / "scaling.data", settings)
    files = weight_files(directory, settings.elements, epoch)
    elements = settings.elements

    descriptors = DescriptorSet.from_config([acsf_config(settings, length_unit)], elements)
    model = Potential(descriptors, elements, settings.hidden, settings.activations[0]).double()
    with torch.no_grad():
        for s, el in enumerate(elements):
            n_sf = len(settings.functions[el])
            mean, std = normalisation(settings, stats[el], str(directory / "scaling.data"))
            descriptors.mean[s, :n_sf] = mean
            descriptors.std[s, :n_sf] = std
            layers = read_weights(files[el], [n_sf] + settings.hidden + [1])
            set_network(model.networks.nets[s], layers, settings.activations)
        shift = [(settings.mean_energy + settings.atom_energy.get(el, 0.0)) * energy_unit for el in elements]
        model.set_energy_reference(torch.tensor(shift, dtype=torch.float64),
                                   energy_unit / settings.conv_energy)
    return model.eval()


def export(directory: str | Path, output: str | Path, epoch: int | None = None,
           length_unit: float = BOHR_ANGSTROM, energy_unit: float = HARTREE_EV) -> Path:
    """:func:`load` the model of ``directory`` and write it as ``model.pt`` to ``output``.

    The metadata are the usual ones (descriptors: the ACSF config in Å) plus ``imported_from``:
    format, directory, weight files and the units used.
    """
    if model_generation(directory) == 4:
        from mlip.interop import n2p2_4g

        return n2p2_4g.export(directory, output, epoch, length_unit, energy_unit)
    model = load(directory, epoch, length_unit, energy_unit)
    directory = Path(directory)
    meta = model_metadata(model, model.descriptors.config)
    meta["imported_from"] = {
        "format": "n2p2",
        "directory": str(directory.resolve()),
        "weights": [p.name for p in weight_files(directory, model.elements, epoch).values()],
        "length_unit_angstrom": length_unit,
        "energy_unit_ev": energy_unit,
    }
    return export_model(model, output, meta)
