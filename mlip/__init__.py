"""mlip: machine-learned interatomic potentials."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["MLIPCalculator", "__version__"]


def __getattr__(name: str) -> Any:
    """Lazy ``mlip.MLIPCalculator`` so that ``import mlip`` does not import torch or ASE."""
    if name == "MLIPCalculator":
        from mlip.calculator import MLIPCalculator

        return MLIPCalculator
    raise AttributeError(f"module 'mlip' has no attribute {name!r}")
