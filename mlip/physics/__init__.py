"""Physics and long-range energy terms added to the networks' energy."""

from mlip.physics.base import PhysicsTerm
from mlip.physics.charges import FixedCharges, enforce_total_charge
from mlip.physics.coulomb import CoulombEngine
from mlip.physics.d3 import D3Dispersion
from mlip.physics.ewald import Ewald
from mlip.physics.potnet import PotNetFeatures
from mlip.physics.zbl import ZBL

__all__ = ["PhysicsTerm", "CoulombEngine", "D3Dispersion", "PotNetFeatures", "ZBL", "Ewald", "FixedCharges",
           "enforce_total_charge"]
