"""Every physical constant of the project, in LAMMPS ``metal`` units (eV, Å, e).

One place for them, so that a conversion is never typed twice. Where two sources use
different values of the same constant, each keeps its own, named by its source: a reader or
a reference program must be matched with *its* values to reproduce it exactly.

- Bohr and Hartree:
  - CODATA 2018: the values of RuNNer/n2p2 data files read by :mod:`parsers.runner` and of
    the dftd4 reference program (:mod:`mlip.physics.d4`);
  - CODATA 2014: the values n2p2 model files were fitted with (:mod:`mlip.interop.n2p2`);
  - LAMMPS ``pair_style dispersion/d3``: the values of that pair style, so that
    :mod:`mlip.physics.d3` and LAMMPS agree to round-off.
- Coulomb's constant: LAMMPS metal ``qqr2e`` (``force->qqr2e``), used by every
  electrostatic term so that they agree with ``coul/long`` + ``kspace_style``.
- Pressure: 1 eV/Å³ in GPa (the value ASE's ``units.GPa`` implies).
"""

from __future__ import annotations

BOHR_CODATA2018 = 0.529177210903  # Å
HARTREE_CODATA2018 = 27.211386245988  # eV

BOHR_CODATA2014 = 0.52917721067  # Å
HARTREE_CODATA2014 = 27.21138602  # eV

BOHR_LAMMPS_D3 = 0.52917725  # Å
HARTREE_LAMMPS_D3 = 27.21140795  # eV

COULOMB_EV_ANGSTROM = 14.399645  # eV·Å/e², k_e = 1/(4π ε₀)

GPA_PER_EV_A3 = 160.21766208  # GPa per eV/Å³
