"""Import n2p2 fourth-generation HDNNPs (4G-HDNNP, Ko et al., Nat. Commun. 12, 398 (2021)) as a
:class:`~mlip.model.qeq_potential.QEqPotential` (the model and its energy definition are
described there).

A 4G model directory holds, besides the 2G files (:mod:`mlip.interop.n2p2`: ``input.nn``,
``scaling.data``, ``weights.ZZZ.data``):

- ``input.nn`` with ``nnp_generation 4`` (RuNNer's ``nnp_gen 4`` is accepted too);
  ``global_hidden_layers_electrostatic``, ``global_nodes_electrostatic`` and
  ``global_activation_electrostatic`` (the electronegativity networks); ``fixed_gausswidth
  ELEMENT σ`` for every element (Gaussian charge widths, length unit of the files);
  ``screen_electrostatics r_in r_out`` (optional; the screening of close pairs);
- ``weightse.ZZZ.data``: the electronegativity network of each element, the same symmetry
  functions as input, one output χ (energy unit per e);
- ``weights.ZZZ.data``: the short-range networks, whose input is the symmetry functions and
  then the atom's charge (e);
- ``hardness.ZZZ.data``: one number per element, J (energy unit per e²).

Units: χ and J are converted with ``energy_unit``, σ and the screening radii with
``length_unit``; the Coulomb constant is then ``energy_unit · length_unit`` (1 Hartree·Bohr for
the default atomic units), so that the charges are those of the files' units exactly.

The electrostatics run on mlip's Coulomb engine to ``accuracy`` (its RMS force error measure,
default 1e-8), with the smallest real-space cutoff that its Ewald splitting needs for the widest
Gaussian (:func:`~mlip.physics.coulomb.cutoff_for_width`), and at least the symmetry functions'
and the screening's ranges; n2p2's own Ewald parameters (``ewald_prec``,
``ewald_truncation_error_method``) only set its truncation error and are not read. Not
supported (an error naming the keyword): ``normalize`` (data-set normalisation) and the other
settings :mod:`mlip.interop.n2p2` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fingerprints.descriptor_set import DescriptorSet
from mlip.errors import UserError
from mlip.export import export_model, model_metadata
from mlip.interop import n2p2
from mlip.model.qeq_potential import QEqPotential
from mlip.physics.coulomb import CoulombEngine, cutoff_for_width
from parsers.elements import atomic_number

DEFAULT_ACCURACY = 1e-8  # Coulomb engine accuracy (RMS force error measure, mlip.physics.coulomb)
# input.nn keywords of 4G models that the 2G settings reader would refuse
ELECTROSTATIC_KEYWORDS = ("use_electrostatics", "global_hidden_layers_electrostatic",
                          "global_nodes_electrostatic", "global_activation_electrostatic")
UNSUPPORTED_4G = {"normalize": "data-set normalisation (mean_energy, conv_energy, conv_length)"}


@dataclass
class Electrostatics:
    """The 4G settings of ``input.nn`` (lengths in the files' unit)."""

    hidden: list[int]
    activations: list[str]  # one per hidden layer, then the output layer
    widths: dict[str, float]  # Gaussian width σ per element
    screening: tuple[float, float]  # (r_in, r_out); (0, 0) without screening


def check_generation(path: Path) -> None:
    """A settings file that does not declare ``nnp_generation 4`` is an error naming it."""
    gen, line = n2p2.generation(path)
    if gen != 4:
        where = f"{path}:{line}" if line else str(path)
        raise UserError(f"{where}: not a 4G-HDNNP settings file (nnp_generation {gen}; a 4G model needs "
                        "'nnp_generation 4')")


def read_electrostatics(path: str | Path, elements: list[str]) -> Electrostatics:
    """The 4G settings of ``input.nn`` for the model's ``elements`` (:func:`check_generation`)."""
    path = Path(path)
    check_generation(path)
    keywords: dict[str, tuple[int, list[str]]] = {}
    widths: dict[str, float] = {}
    for line, key, words in n2p2.read_keywords(path):
        if key in UNSUPPORTED_4G:
            raise n2p2.line_error(path, line, f"keyword {key!r} is not supported for 4G models: "
                                              f"{UNSUPPORTED_4G[key]}")
        if key == "fixed_gausswidth":
            if len(words) != 2:
                raise n2p2.line_error(path, line, "fixed_gausswidth needs: ELEMENT WIDTH")
            if words[0] not in elements:
                raise n2p2.line_error(path, line, f"fixed_gausswidth: element {words[0]!r} is not one of the "
                                              f"elements {elements}")
            widths[words[0]] = n2p2.parse_number(path, line, words[1], "fixed_gausswidth")
            if not widths[words[0]] > 0:
                raise n2p2.line_error(path, line, f"fixed_gausswidth of {words[0]} must be > 0")
        else:
            keywords[key] = (line, words)
    missing = [el for el in elements if el not in widths]
    if missing:
        raise UserError(f"{path}: no fixed_gausswidth for element(s) {', '.join(missing)}")
    hidden, activations = n2p2.architecture(path, keywords, "electrostatic")
    screening = (0.0, 0.0)
    if "screen_electrostatics" in keywords:
        line, words = keywords["screen_electrostatics"]
        if len(words) != 2:
            raise n2p2.line_error(path, line, "screen_electrostatics needs: INNER OUTER (the cosine core; "
                                          "other core functions are not supported)")
        inner, outer = (n2p2.parse_number(path, line, w, "screen_electrostatics") for w in words)
        if not 0.0 <= inner < outer:
            raise n2p2.line_error(path, line, "screen_electrostatics needs 0 <= inner < outer, "
                                              f"got {inner} {outer}")
        screening = (inner, outer)
    return Electrostatics(hidden, activations, widths, screening)


def read_hardness(directory: str | Path, elements: list[str]) -> dict[str, float]:
    """J of each element from ``hardness.ZZZ.data`` (one number, energy unit per e²)."""
    directory = Path(directory)
    files = {el: directory / f"hardness.{atomic_number(el):03d}.data" for el in elements}
    missing = [f"{p.name} ({el})" for el, p in files.items() if not p.is_file()]
    if missing:
        raise UserError(f"{directory}: hardness file(s) missing for this 4G model: {', '.join(missing)}")
    hardness = {}
    for el, path in files.items():
        words = path.read_text().split("#", 1)[0].split()
        if len(words) != 1:
            raise UserError(f"{path}: expected one number (the hardness of {el}), got {len(words)} values")
        hardness[el] = n2p2.parse_number(path, 1, words[0], "hardness")
    return hardness


def load(directory: str | Path, epoch: int | None = None, length_unit: float = n2p2.BOHR_ANGSTROM,
         energy_unit: float = n2p2.HARTREE_EV, accuracy: float = DEFAULT_ACCURACY,
         mode: str = "auto") -> QEqPotential:
    """A 4G n2p2 model directory as a float64 :class:`QEqPotential` in Å and eV.

    ``epoch``, ``length_unit``, ``energy_unit`` as in :func:`mlip.interop.n2p2.load`;
    ``accuracy`` and ``mode`` of the Coulomb engine (:class:`~mlip.physics.coulomb.CoulombEngine`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"n2p2 model directory not found: {directory}")
    if not (length_unit > 0 and energy_unit > 0):
        raise UserError(f"length_unit and energy_unit must be > 0, got {length_unit} Å and {energy_unit} eV")
    if not 0.0 < accuracy < 1.0:
        raise UserError(f"4G import: the Coulomb accuracy must lie in (0, 1), got {accuracy}")
    settings_file = directory / "input.nn"
    check_generation(settings_file)
    settings = n2p2.read_settings(settings_file, allow=ELECTROSTATIC_KEYWORDS)
    elements = settings.elements
    electrostatics = read_electrostatics(settings_file, elements)
    stats = n2p2.read_scaling(directory / "scaling.data", settings)
    hardness = read_hardness(directory, elements)
    chi_files = n2p2.weight_files(directory, elements, epoch, prefix="weightse")
    short_files = n2p2.weight_files(directory, elements, epoch)

    widths = torch.tensor([electrostatics.widths[el] * length_unit for el in elements], dtype=torch.float64)
    inner, outer = (r * length_unit for r in electrostatics.screening)
    descriptors = DescriptorSet.from_config([n2p2.acsf_config(settings, length_unit)], elements)
    cutoff = max(float(descriptors.cutoff), outer, cutoff_for_width(float(widths.max()), accuracy))
    engine = CoulombEngine(cutoff, accuracy, mode, prefactor=energy_unit * length_unit)
    model = QEqPotential(descriptors, elements, electrostatics.hidden, settings.hidden, widths,
                         torch.tensor([hardness[el] * energy_unit for el in elements], dtype=torch.float64),
                         engine, (inner, outer)).double()
    with torch.no_grad():
        for s, el in enumerate(elements):
            n_sf = len(settings.functions[el])
            mean, std = n2p2.normalisation(settings, stats[el], str(directory / "scaling.data"))
            descriptors.mean[s, :n_sf] = mean
            descriptors.std[s, :n_sf] = std
            layers = n2p2.read_weights(chi_files[el], [n_sf, *electrostatics.hidden, 1])
            n2p2.set_network(model.networks.nets[s], layers, electrostatics.activations)
            # the charge is n2p2's input n_sf + 1; here it is the last column, after the padding
            layers = n2p2.read_weights(short_files[el], [n_sf + 1, *settings.hidden, 1])
            weight, bias = layers[0]
            padded = torch.zeros(weight.shape[0], descriptors.n_features + 1, dtype=torch.float64)
            padded[:, :n_sf] = weight[:, :n_sf]
            padded[:, -1] = weight[:, n_sf]
            n2p2.set_network(model.short_networks.nets[s], [(padded, bias), *layers[1:]],
                             settings.activations)
        shift = [settings.atom_energy.get(el, 0.0) * energy_unit for el in elements]
        model.set_energy_reference(torch.tensor(shift, dtype=torch.float64), energy_unit)
        model.electronegativity_scale.fill_(energy_unit)
    return model.eval()


def export(directory: str | Path, output: str | Path, epoch: int | None = None,
           length_unit: float = n2p2.BOHR_ANGSTROM, energy_unit: float = n2p2.HARTREE_EV,
           accuracy: float = DEFAULT_ACCURACY, mode: str = "auto") -> Path:
    """:func:`load` the 4G model of ``directory`` and write it as ``model.pt`` to ``output``
    (metadata as :func:`mlip.interop.n2p2.export`, ``long_range`` and ``charges`` true, plus
    ``qeq``: widths Å, hardness eV/e², screening Å, the Coulomb engine's cutoff, accuracy and
    mode)."""
    model = load(directory, epoch, length_unit, energy_unit, accuracy, mode)
    directory = Path(directory)
    meta = model_metadata(model, model.descriptors.config)  # long_range and qeq included
    files = [*n2p2.weight_files(directory, model.elements, epoch, prefix="weightse").values(),
             *n2p2.weight_files(directory, model.elements, epoch).values()]
    meta["imported_from"] = {
        "format": "n2p2 4G-HDNNP",
        "directory": str(directory.resolve()),
        "weights": [p.name for p in files],
        "hardness": [f"hardness.{atomic_number(el):03d}.data" for el in model.elements],
        "length_unit_angstrom": length_unit,
        "energy_unit_ev": energy_unit,
    }
    return export_model(model, output, meta)

