"""Reader of RANN potential / parameter files (LAMMPS ``pair_style rann`` format).

The file is a sequence of key lines followed by value lines; ``#`` starts a comment::

    atomtypes:
    Y
    mass:Y:
    88.906
    fingerprintsperelement:Y:
    2
    fingerprints:Y_Y:
    radialscreened_0
    fingerprints:Y_Y_Y:
    bondscreened_0
    fingerprintconstants:Y_Y:radialscreened_0:re:
    3.607
    ...
    screening:Y_Y_Y:Cmin:
    0.36
    networklayers:Y:
    3
    layersize:Y:0:
    29
    weight:Y:0:            (layersize[1] lines of layersize[0] numbers)
    bias:Y:0:              (layersize[1] numbers, one per line)
    activationfunctions:Y:0:
    sigI

Supported fingerprint styles: radial, radialscreened, bond, bondscreened (element ``all``
allowed as a neighbour). Every centre element must use the same fingerprint list (with the
same constants), because a :class:`~fingerprints.DescriptorSet` computes one feature vector
for every atom; a file with centre-specific lists raises :class:`parsers.errors.ParseError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parsers.errors import ParseError

RADIAL_KEYS = ("re", "rc", "dr", "alpha", "o", "n")
BOND_KEYS = ("re", "rc", "dr", "alphak", "k", "m")
STYLES = {"radial": ("rann_radial", RADIAL_KEYS), "radialscreened": ("rann_radial_screened", RADIAL_KEYS),
          "bond": ("rann_bond", BOND_KEYS), "bondscreened": ("rann_bond_screened", BOND_KEYS)}
INT_KEYS = ("o", "n", "k", "m")
LIST_KEYS = ("alpha", "alphak")


@dataclass
class RannInput:
    """Contents of a RANN file.

    ``elements`` in file order; ``descriptors`` the DescriptorSet config list (features in
    RANN's input-layer order); per element: ``masses`` (amu), ``layer_sizes``, ``activations``
    (per layer, e.g. ``"sigI"``), ``weights`` (per layer, (out, in) arrays) and ``biases``
    (per layer, (out,) arrays).
    """

    path: str
    elements: list[str]
    descriptors: list[dict[str, Any]]
    masses: dict[str, float] = field(default_factory=dict)
    layer_sizes: dict[str, list[int]] = field(default_factory=dict)
    activations: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    biases: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def descriptor_set(self, elements: list[str] | None = None):
        """The :class:`~fingerprints.DescriptorSet` (elements default: sorted by atomic number)."""
        from ase.data import atomic_numbers

        from fingerprints.descriptor_set import DescriptorSet

        if elements is None:
            elements = sorted(self.elements, key=lambda el: atomic_numbers.get(el, 0))
        return DescriptorSet.from_config(self.descriptors, elements)


class _Lines:
    """Non-blank, comment-stripped lines with their 1-based numbers."""

    def __init__(self, path: str) -> None:
        self.path = path
        text = Path(path).read_text().splitlines()
        self.items = [(n + 1, line.split("#", 1)[0].strip()) for n, line in enumerate(text)]
        self.items = [(n, s) for n, s in self.items if s]
        self.pos = 0

    def next(self, after: str) -> tuple[int, str]:
        if self.pos >= len(self.items):
            raise ParseError(self.path, None, f"a value line after '{after}'", "end of file")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def numbers(self, count: int, after: str, kind: type = float) -> list:
        """Read ``count`` numbers from as many following lines as they take."""
        values: list = []
        while len(values) < count:
            line_no, text = self.next(after)
            for word in text.replace(",", " ").split():
                try:
                    values.append(kind(word))
                except ValueError:
                    raise ParseError(self.path, line_no, f"{kind.__name__} values for '{after}'",
                                     repr(word)) from None
            if len(values) > count:
                raise ParseError(self.path, line_no, f"{count} values for '{after}'", f"{len(values)}")
        return values


def _one(lines: _Lines, key: str, kind: type) -> Any:
    return lines.numbers(1, key, kind)[0]


def read_input(path: str | Path) -> RannInput:
    """Read a RANN parameter file; see the module docstring. Raises ParseError naming file and line."""
    path = str(path)
    lines = _Lines(path)
    elements: list[str] = []
    masses: dict[str, float] = {}
    per_element: dict[str, int] = {}
    fingerprints: dict[str, list[tuple[tuple[str, ...], str, int, int]]] = {}
    constants: dict[tuple, dict[str, Any]] = {}
    screening: dict[str, dict[str, float]] = {"Cmin": {}, "Cmax": {}}
    layer_sizes: dict[str, list[int]] = {}
    activations: dict[str, list[str]] = {}
    weights: dict[str, list[np.ndarray]] = {}
    biases: dict[str, list[np.ndarray]] = {}

    def element(name: str, line_no: int, allow_all: bool = False) -> str:
        if name in elements or (allow_all and name == "all"):
            return name
        raise ParseError(path, line_no, f"an element from atomtypes {elements}", repr(name))

    def layer(el: str, word: str, line_no: int) -> int:
        if el not in layer_sizes:
            raise ParseError(path, line_no, f"networklayers:{el}: before per-layer entries")
        try:
            i = int(word)
        except ValueError:
            raise ParseError(path, line_no, "an integer layer index", repr(word)) from None
        if not 0 <= i < len(layer_sizes[el]):
            raise ParseError(path, line_no, f"a layer index below {len(layer_sizes[el])}", str(i))
        return i

    while lines.pos < len(lines.items):
        line_no, key_line = lines.next("")
        parts = [p for p in key_line.split(":") if p != ""]
        key = parts[0]
        if key != "atomtypes" and not elements:
            raise ParseError(path, line_no, "'atomtypes:' before other sections", repr(key_line))
        if key == "atomtypes":
            elements = lines.next(key_line)[1].replace(",", " ").split()
        elif key == "mass" and len(parts) == 2:
            masses[element(parts[1], line_no)] = _one(lines, key_line, float)
        elif key == "fingerprintsperelement" and len(parts) == 2:
            per_element[element(parts[1], line_no, allow_all=True)] = _one(lines, key_line, int)
        elif key == "fingerprints" and len(parts) == 2:
            combo = parts[1].split("_")
            if len(combo) not in (2, 3):
                raise ParseError(path, line_no, "2 (radial) or 3 (bond) elements joined by '_'", parts[1])
            centre = element(combo[0], line_no, allow_all=True)
            neighbours = tuple(element(c, line_no, allow_all=True) for c in combo[1:])
            value_no, value = lines.next(key_line)
            for word in value.split():
                style, _, ident = word.rpartition("_")
                if style not in STYLES or not ident.isdigit():
                    raise ParseError(path, value_no, f"fingerprints named <style>_<id> with style in "
                                     f"{sorted(STYLES)}", repr(word))
                if (len(neighbours) == 1) != style.startswith("radial"):
                    raise ParseError(path, value_no, f"a {'pair' if len(neighbours) == 1 else 'bond'} "
                                     f"style for {parts[1]}", style)
                fingerprints.setdefault(centre, []).append((neighbours, style, int(ident), value_no))
        elif key == "fingerprintconstants" and len(parts) == 4:
            combo = tuple(parts[1].split("_"))
            style, _, ident = parts[2].rpartition("_")
            name = parts[3]
            if style not in STYLES or name not in STYLES[style][1]:
                raise ParseError(path, line_no, f"a constant of {sorted(STYLES)}", f"{parts[2]}:{name}")
            if name in LIST_KEYS:
                value_no, text = lines.next(key_line)
                try:
                    value: Any = [float(w) for w in text.replace(",", " ").split()]
                except ValueError:
                    raise ParseError(path, value_no, f"numbers for {name}", repr(text)) from None
            else:
                value = _one(lines, key_line, int if name in INT_KEYS else float)
            constants.setdefault((combo, style, ident), {})[name] = value
        elif key == "screening" and len(parts) == 3 and parts[2] in ("Cmin", "Cmax"):
            triple = parts[1].split("_")
            if len(triple) != 3:
                raise ParseError(path, line_no, "three elements joined by '_'", parts[1])
            for t in triple:
                element(t, line_no)
            screening[parts[2]][parts[1]] = _one(lines, key_line, float)
        elif key == "networklayers" and len(parts) == 2:
            el = element(parts[1], line_no)
            n_layers = _one(lines, key_line, int)
            if n_layers < 2:
                raise ParseError(path, line_no, "at least 2 network layers (input and output)", str(n_layers))
            layer_sizes[el] = [0] * n_layers
            activations[el] = ["linear"] * (n_layers - 1)
            weights[el] = [np.zeros((0, 0))] * (n_layers - 1)
            biases[el] = [np.zeros(0)] * (n_layers - 1)
        elif key == "layersize" and len(parts) == 3:
            el = element(parts[1], line_no)
            layer_sizes[el][layer(el, parts[2], line_no)] = _one(lines, key_line, int)
        elif key in ("weight", "bias") and len(parts) == 3:
            el = element(parts[1], line_no)
            i = layer(el, parts[2], line_no)
            n_in, n_out = layer_sizes[el][i], layer_sizes[el][min(i + 1, len(layer_sizes[el]) - 1)]
            if i == len(layer_sizes[el]) - 1 or n_in == 0 or n_out == 0:
                raise ParseError(path, line_no, f"layersize of layers {i} and {i + 1} before {key}")
            if key == "weight":
                weights[el][i] = np.array(lines.numbers(n_in * n_out, key_line)).reshape(n_out, n_in)
            else:
                biases[el][i] = np.array(lines.numbers(n_out, key_line))
        elif key == "activationfunctions" and len(parts) == 3:
            el = element(parts[1], line_no)
            i = layer(el, parts[2], line_no)
            if i == len(layer_sizes[el]) - 1:
                raise ParseError(path, line_no, "no activation for the output layer")
            activations[el][i] = lines.next(key_line)[1].split()[0]
        elif key == "calibrationparameters":
            lines.next(key_line)
        else:
            raise ParseError(path, line_no, "a known RANN keyword line", repr(key_line))

    descriptors = _descriptor_config(path, elements, fingerprints, constants, screening, per_element)
    n_features = sum(_n_features(e) for e in descriptors)
    for el, sizes in layer_sizes.items():
        if sizes[0] != n_features:
            raise ParseError(path, None, f"layersize:{el}:0: equal to the {n_features} fingerprint values",
                             str(sizes[0]))
    return RannInput(path, elements, descriptors, masses, layer_sizes, activations, weights, biases)


def _n_features(entry: dict[str, Any]) -> int:
    if entry["type"].startswith("rann_radial"):
        return entry["n"] - entry["o"] + 1
    return entry["k"] * entry["m"]


def _descriptor_config(path: str, elements: list[str], fingerprints: dict, constants: dict, screening: dict,
                       per_element: dict[str, int]) -> list[dict[str, Any]]:
    """One config entry per fingerprint, checked to be the same for every centre element."""
    if not fingerprints:
        raise ParseError(path, None, "at least one 'fingerprints:' section")
    for centre, count in per_element.items():
        defined = len(fingerprints.get(centre, []))
        if count != defined:
            raise ParseError(path, None, f"fingerprintsperelement:{centre}: equal to the {defined} "
                             "fingerprints defined for it", str(count))
    if "all" not in fingerprints and set(fingerprints) != set(elements):
        raise ParseError(path, None, f"fingerprints for every element of {elements} (or for centre 'all')",
                         ", ".join(fingerprints))
    configs: dict[str, list[dict[str, Any]]] = {}
    for centre, entries in fingerprints.items():
        config = []
        for neighbours, style, ident, line_no in entries:
            values = constants.get(((centre, *neighbours), style, str(ident)), {})
            type_name, keys = STYLES[style]
            missing = [k for k in keys if k not in values]
            if missing:
                name = f"{'_'.join((centre, *neighbours))}:{style}_{ident}"
                raise ParseError(path, line_no, f"fingerprintconstants {missing} for {name}")
            entry: dict[str, Any] = {"type": type_name, **{k: values[k] for k in keys}}
            n_alpha = entry["n"] - entry["o"] + 1 if "alpha" in entry else entry["k"]
            if len(entry.get("alpha", entry.get("alphak"))) != n_alpha or n_alpha < 1:
                raise ParseError(path, line_no, f"{n_alpha} alpha values (n - o + 1 for radial, k for bond) "
                                 f"for {style}_{ident}", str(len(entry.get("alpha", entry.get("alphak")))))
            if style.startswith("radial"):
                entry["neighbors"] = [neighbours[0]]
            else:
                entry["pairs"] = [list(neighbours)]
            if style.endswith("screened"):
                for bound in ("Cmin", "Cmax"):
                    if screening[bound]:
                        entry[bound] = dict(screening[bound])
            config.append(entry)
        configs[centre] = config
    if "all" in configs and len(configs) > 1:
        raise ParseError(path, None, "fingerprints for centre 'all' only, or per element (not both)")
    lists = list(configs.values())
    if any(c != lists[0] for c in lists[1:]):
        raise ParseError(path, None, "the same fingerprint list for every centre element (centre-specific "
                         "fingerprint sets are not supported)", ", ".join(configs))
    return lists[0]
