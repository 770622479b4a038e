"""Physics and long-range energy terms added to the networks' energy."""

from mlip.physics.base import PhysicsTerm

__all__ = ["PhysicsTerm"]
