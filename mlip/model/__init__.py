"""The potential: per-element networks on descriptors plus physics terms."""

from mlip.model.activations import Activation
from mlip.model.networks import ElementNetworks
from mlip.model.potential import Potential

__all__ = ["Activation", "ElementNetworks", "Potential"]
