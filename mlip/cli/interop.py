"""``mlip import-n2p2``: turn an n2p2/RuNNer model directory into ``model.pt``."""

from __future__ import annotations

import click

from mlip.cli import main


@main.command("import-n2p2")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="model.pt to write.")
@click.option("--epoch", type=int, default=None,
              help="Use the trainer's weights.ZZZ.EEEEEE.out of this epoch instead of weights.ZZZ.data.")
@click.option("--length-unit", type=float, default=None,
              help="Å per length unit of the files [default: Bohr, 0.52917721067].")
@click.option("--energy-unit", type=float, default=None,
              help="eV per energy unit of the files [default: Hartree, 27.21138602].")
def import_n2p2(directory: str, output: str, epoch: int | None, length_unit: float | None,
                energy_unit: float | None) -> None:
    """Import the n2p2 potential of DIRECTORY (input.nn, scaling.data, weight files) as a model file.

    \b
    Example:
      mlip import-n2p2 nnp/Cu -o cu_nnp.pt
      mlip import-n2p2 training/ -o epoch12.pt --epoch 12
    """
    from mlip.interop import n2p2

    units = {k: v for k, v in (("length_unit", length_unit), ("energy_unit", energy_unit)) if v is not None}
    path = n2p2.export(directory, output, epoch, **units)
    click.echo(f"wrote {path}")
