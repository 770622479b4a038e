"""The demo and the generators of synthetic training data, all written by LAMMPS.

- :mod:`mlip.demo.run`: ``mlip demo``, the whole path on copper;
- :mod:`mlip.demo.cu_eam`: Cu EAM molecular dynamics written as LAMMPS dumps (demo, tests);
- :mod:`mlip.demo.nacl`: rigid-ion NaCl data for the long-range benchmark and tests.

Nothing else in the library imports this package; the ``mlip demo`` command, the tests and
the benchmarks do.
"""
