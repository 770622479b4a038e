"""Physics and long-range energy terms added to the networks' energy."""

from mlip.physics.base import PhysicsTerm
from mlip.physics.d3 import D3Dispersion

__all__ = ["PhysicsTerm", "D3Dispersion"]
