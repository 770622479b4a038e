"""A set of descriptors built from a config, concatenated and normalised per element.

Config: a list of dicts (YAML-able), each with a ``type`` and that descriptor's parameters::

    [{"type": "rann_radial", "re": 2.55, "rc": 5.5, "dr": 2.5, "alpha": [4.5] * 8, "o": -1, "n": 6},
     {"type": "rann_bond", "re": 2.55, "rc": 5.5, "dr": 2.5, "alphak": [1, 2, 4, 7], "m": 4}]

Types (see :data:`DESCRIPTOR_TYPES`): ``rann_radial``, ``rann_radial_screened``, ``rann_bond``,
``rann_bond_screened`` (:mod:`fingerprints.rann`), ``acsf`` (:mod:`fingerprints.acsf`),
``radial_density``, ``power_spectrum`` and ``bispectrum`` (:mod:`fingerprints.spectral`). Classes are imported
lazily by name. A class with a ``from_config(params, elements, **extra)`` classmethod gets the
element symbols (so the config can name elements); any other is called as
``cls(n_species=len(elements), **params)``.

Descriptors that need whole frames (global descriptors, such as mlip's PotNet lattice sums) mark
themselves with a ``long_range`` attribute (True) and take the batch dict as a fifth argument,
``forward(species, edge_index, edge_vec, n_centers, data)`` (``data``: ``positions``, ``cell``,
``pbc``, ``batch`` ..., the names of :mod:`mlip.keys`); the set passes it on, and its own
``long_range`` says whether it holds one. Types defined above this package are given to
:meth:`DescriptorSet.from_config` as ``types`` (name -> class).

Normalisation: ``forward`` returns ``(raw − mean[s]) / std[s]`` with per-centre-element
statistics ``mean``, ``std`` (n_species, n_features) fitted by :meth:`DescriptorSet.fit_normalization`
on training data (identity until then): a mean per feature and, by default, one std per
descriptor block (or per feature).
"""

import importlib
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

#: type name -> (module, class, extra keyword arguments for ``from_config``)
DESCRIPTOR_TYPES: Dict[str, Tuple[str, str, Dict[str, Any]]] = {
    "rann_radial": ("fingerprints.rann", "RannRadial", {}),
    "rann_radial_screened": ("fingerprints.rann", "RannRadial", {"screened": True}),
    "rann_bond": ("fingerprints.rann", "RannBond", {}),
    "rann_bond_screened": ("fingerprints.rann", "RannBond", {"screened": True}),
    "acsf": ("fingerprints.acsf", "ACSF", {}),
    "radial_density": ("fingerprints.spectral", "RadialDensity", {}),
    "power_spectrum": ("fingerprints.spectral", "PowerSpectrum", {}),
    "bispectrum": ("fingerprints.spectral", "Bispectrum", {}),
}

# Approximate nearest-neighbour distances (Å) of common elements, for default_config's cutoff;
# other elements fall back to twice ASE's covalent radius.
_NN_DISTANCE = {"Al": 2.86, "Cu": 2.55, "Ni": 2.49, "Ag": 2.89, "Au": 2.88, "Pt": 2.77, "Pd": 2.75,
                "Fe": 2.48, "Mo": 2.73, "W": 2.74, "Ta": 2.86, "Nb": 2.86, "V": 2.62, "Cr": 2.50,
                "Li": 3.04, "Na": 3.66, "K": 4.54, "Mg": 3.20, "Ti": 2.90, "Zr": 3.18, "Y": 3.56,
                "Zn": 2.66, "Co": 2.50, "Si": 2.35, "Ge": 2.45}


def descriptor_class(type_name: str,
                     types: Optional[Mapping[str, type]] = None) -> Tuple[type, Dict[str, Any]]:
    """The class registered for ``type_name`` (or given in ``types``) and its extra
    ``from_config`` arguments."""
    if types is not None and type_name in types:
        return types[type_name], {}
    if type_name not in DESCRIPTOR_TYPES:
        known = ", ".join(sorted([*DESCRIPTOR_TYPES, *(types or {})]))
        raise ValueError(f"unknown descriptor type {type_name!r}; known: {known}")
    module_name, class_name, extra = DESCRIPTOR_TYPES[type_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"descriptor type {type_name!r} needs {module_name}, which cannot be imported: "
                         f"{err}") from err
    return getattr(module, class_name), dict(extra)


def build_descriptor(entry: Mapping[str, Any], elements: Sequence[str],
                     types: Optional[Mapping[str, type]] = None) -> torch.nn.Module:
    """One descriptor module from a config entry (a dict with ``type``); ``types``: extra classes."""
    if not isinstance(entry, Mapping) or "type" not in entry:
        raise ValueError(f"each descriptor config entry must be a mapping with a 'type', got {entry!r}")
    params = {k: v for k, v in entry.items() if k != "type"}
    cls, extra = descriptor_class(str(entry["type"]), types)
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(params, list(elements), **extra)
        return cls(n_species=len(elements), **params)
    except TypeError as err:  # unknown or missing parameter names
        raise ValueError(f"descriptor {entry['type']!r}: {err}") from err


def default_config(elements: Sequence[str], cutoff: Optional[float] = None) -> List[Dict[str, Any]]:
    """The default descriptor: a SOAP-like power spectrum (Bessel radial basis, n_max 6, l_max 4;
    105 features for one element, (6·S)(6·S + 1)/2 · 5 for S elements) and, as a second block,
    a Gaussian radial density (8 functions per element, ``radial_density: 8``).

    ``cutoff`` (Å) defaults to twice the mean nearest-neighbour distance of the elements, at
    least 5 Å (Cu 5.1, Li 6.08, Mo 5.46, Si 5.0, Y 7.12): about 45 neighbours in a metal.
    Chosen on the mlearn benchmark (benchmarks/mlearn.py, benchmarks/RESULTS.md).
    """
    from ase.data import atomic_numbers, covalent_radii

    for el in elements:
        if el not in atomic_numbers:
            raise ValueError(f"unknown element symbol {el!r}")
    re = sum(_NN_DISTANCE.get(el, 2.0 * float(covalent_radii[atomic_numbers[el]])) for el in elements) \
        / len(elements)
    if cutoff is None:
        cutoff = max(5.0, round(2.0 * re, 2))
    return [{"type": "power_spectrum", "cutoff": float(cutoff), "n_max": 6, "l_max": 4,
             "radial_basis": "bessel", "radial_density": 8}]


class DescriptorSet(torch.nn.Module):
    """Several descriptors side by side, normalised per centre element.

    Args:
        descriptors: modules following the descriptor interface (``cutoff``, ``n_features``,
            ``forward(species, edge_index, edge_vec, n_centers)``, or with the batch dict as a
            fifth argument for those marked ``long_range``; module docstring).
        n_species: number of elements of the model.
        config_json: the config the set was built from (JSON text, kept for metadata).

    forward: ``(species (N,) int64, edge_index (2, E) int64, edge_vec (E, 3) Å, n_centers,
    data) -> (n_centers, n_features)`` normalised features; :meth:`raw` gives them unnormalised.
    ``data`` (the batch dict) is needed only when ``long_range``.
    """

    __jit_unused_properties__ = ["config"]

    cutoff: float
    n_features: int
    n_species: int
    long_range: bool
    config_json: str
    feature_slices: List[Tuple[int, int]]

    def __init__(self, descriptors: Sequence[torch.nn.Module], n_species: int,
                 config_json: str = "[]") -> None:
        super().__init__()
        if not descriptors:
            raise ValueError("a descriptor set needs at least one descriptor")
        self.descriptors = torch.nn.ModuleList(descriptors)
        self.n_species = int(n_species)
        self.cutoff = float(max(float(d.cutoff) for d in descriptors))
        self.long_range = any(bool(getattr(d, "long_range", False)) for d in descriptors)
        slices: List[Tuple[int, int]] = []
        start = 0
        for d in descriptors:  # one normalisation block per descriptor, or per entry of its block_sizes
            for size in getattr(d, "block_sizes", [int(d.n_features)]):
                slices.append((start, start + int(size)))
                start += int(size)
        self.feature_slices = slices
        self.n_features = start
        self.config_json = config_json
        self.register_buffer("mean", torch.zeros(self.n_species, self.n_features, dtype=torch.float64))
        self.register_buffer("std", torch.ones(self.n_species, self.n_features, dtype=torch.float64))

    @classmethod
    def from_config(cls, config: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
                    elements: Sequence[str], types: Optional[Mapping[str, type]] = None) -> "DescriptorSet":
        """Build from a config list (or a single entry) for the given element symbols;
        ``types``: descriptor classes by type name beyond :data:`DESCRIPTOR_TYPES`."""
        entries = [config] if isinstance(config, Mapping) else list(config)
        if not entries:
            raise ValueError("descriptor config is empty")
        modules = [build_descriptor(e, elements, types) for e in entries]
        return cls(modules, len(elements), json.dumps([dict(e) for e in entries]))

    @property
    def config(self) -> List[Dict[str, Any]]:
        """The config list the set was built from."""
        return json.loads(self.config_json)

    def extra_repr(self) -> str:
        return f"n_species={self.n_species}, n_features={self.n_features}, cutoff={self.cutoff}"

    @torch.jit.export
    def raw(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int,
            data: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """Unnormalised features (n_centers, n_features)."""
        parts: List[Tensor] = []
        for descriptor in self.descriptors:
            if hasattr(descriptor, "long_range"):  # resolved when compiled: the batch-taking protocol
                if data is None:
                    raise RuntimeError("descriptors: a long-range descriptor needs the batch dict (data)")
                parts.append(descriptor(species, edge_index, edge_vec, n_centers, data))
            else:
                parts.append(descriptor(species, edge_index, edge_vec, n_centers))
        return torch.cat(parts, dim=1)

    def forward(self, species: Tensor, edge_index: Tensor, edge_vec: Tensor, n_centers: int,
                data: Optional[Dict[str, Tensor]] = None) -> Tensor:
        features = self.raw(species, edge_index, edge_vec, n_centers, data)
        center_species = species[:n_centers]
        mean = self.mean.to(features.dtype).index_select(0, center_species)
        std = self.std.to(features.dtype).index_select(0, center_species)
        return (features - mean) / std

    @torch.jit.unused
    def fit_normalization(self, batches: Iterable[Sequence[Any]], scaling: str = "block") -> None:
        """Fit per-element means and scales of the raw features on training data.

        batches: iterable of ``(species, edge_index, edge_vec)``,
        ``(species, edge_index, edge_vec, n_centers)`` or ``(species, edge_index, edge_vec,
        n_centers, data)`` (torch tensors or numpy arrays; without ``n_centers`` every atom is
        a centre; ``data``, the batch dict, for long-range descriptors). Statistics accumulate in
        float64 (Chan's pairwise update). Each feature gets its own mean. ``scaling``: ``"block"`` divides all
        features of one block (a descriptor, or each part of one that has ``block_sizes``) by one
        std (the root of their mean variance), which keeps the features that bulk symmetry
        nearly switches off (odd l of a power spectrum in a cubic crystal) small, instead of
        blowing them up to tens of standard deviations at surfaces and defects; ``"feature"``
        gives every feature its own std. Elements absent from the data keep mean 0, std 1; a
        std < 1e-12 (relative to the features' scale) stays 1.
        """
        count = torch.zeros(self.n_species, dtype=torch.float64)
        mean = torch.zeros(self.n_species, self.n_features, dtype=torch.float64)
        m2 = torch.zeros(self.n_species, self.n_features, dtype=torch.float64)
        dtype = self.mean.dtype
        with torch.no_grad():
            for batch in batches:
                species = torch.as_tensor(batch[0], dtype=torch.int64)
                edge_index = torch.as_tensor(batch[1], dtype=torch.int64)
                edge_vec = torch.as_tensor(batch[2]).to(dtype)
                n_centers = int(batch[3]) if len(batch) > 3 else int(species.shape[0])
                data = None
                if len(batch) > 4:
                    data = {k: torch.as_tensor(v) for k, v in batch[4].items()}
                    data = {k: v.to(dtype) if v.is_floating_point() else v for k, v in data.items()}
                x = self.raw(species, edge_index, edge_vec, n_centers, data).double()
                s = species[:n_centers]
                n_b = torch.bincount(s, minlength=self.n_species).double()
                sum_b = torch.zeros_like(mean).index_add_(0, s, x)
                mean_b = sum_b / n_b.clamp(min=1.0).unsqueeze(1)
                m2_b = torch.zeros_like(mean).index_add_(0, s, (x - mean_b.index_select(0, s)) ** 2)
                total = count + n_b
                delta = mean_b - mean
                w = (n_b / total.clamp(min=1.0)).unsqueeze(1)
                mean = mean + delta * w
                m2 = m2 + m2_b + delta**2 * (count * n_b / total.clamp(min=1.0)).unsqueeze(1)
                count = total
        if float(count.sum()) == 0.0:
            raise ValueError("fit_normalization got no atoms")
        std = torch.sqrt(m2 / count.clamp(min=1.0).unsqueeze(1))
        scale = mean.abs()
        if scaling == "block":  # one std per block: the root mean variance of its features
            for a, b in self.feature_slices:
                std[:, a:b] = torch.sqrt((std[:, a:b] ** 2).mean(dim=1, keepdim=True))
                scale[:, a:b] = scale[:, a:b].mean(dim=1, keepdim=True)
        elif scaling != "feature":
            raise ValueError(f"scaling must be 'block' or 'feature', got {scaling!r}")
        flat = std <= 1e-12 * (scale + 1.0)
        std = torch.where(flat | (count.unsqueeze(1) < 2), torch.ones_like(std), std)
        mean = torch.where(count.unsqueeze(1) > 0, mean, torch.zeros_like(mean))
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
