"""Neighbour lists and atomic descriptors (torch, TorchScript-ready).

- :mod:`fingerprints.neighbors`: periodic neighbour lists (numpy, vesin).
- :mod:`fingerprints.cutoffs`: cutoff functions.
- :mod:`fingerprints.rann`: RANN radial/bond fingerprints (optionally MEAM-screened); RANN
  parameter files are read by :mod:`mlip.interop.rann`.
- :mod:`fingerprints.acsf`: Behler–Parrinello symmetry functions.
- :mod:`fingerprints.spectral`: e3nn power spectrum and bispectrum.
- :mod:`fingerprints.descriptor_set`: :class:`DescriptorSet`, descriptors from a config.
- :mod:`fingerprints.plot`: figures of radial functions and cutoffs.
"""

from fingerprints.descriptor_set import DescriptorSet, default_config
from fingerprints.neighbors import batch_neighbor_list, neighbor_list

__all__ = ["DescriptorSet", "batch_neighbor_list", "default_config", "neighbor_list"]
