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
@click.option("--coulomb-accuracy", type=float, default=None,
              help="4G models: accuracy of the Coulomb engine (RMS force error measure) [default: 1e-8].")
def import_n2p2(directory: str, output: str, epoch: int | None, length_unit: float | None,
                energy_unit: float | None, coulomb_accuracy: float | None) -> None:
    """Import the n2p2 potential of DIRECTORY (input.nn, scaling.data, weight files; 4G-HDNNPs
    also weightse.*.data and hardness.*.data) as a model file.

    \b
    Example:
      mlip import-n2p2 nnp/Cu -o cu_nnp.pt
      mlip import-n2p2 training/ -o epoch12.pt --epoch 12
      mlip import-n2p2 nnp-predict/AlAuMgO_4G -o alaumgo_4g.pt
    """
    from mlip.errors import UserError
    from mlip.interop import n2p2, n2p2_4g

    units = {k: v for k, v in (("length_unit", length_unit), ("energy_unit", energy_unit)) if v is not None}
    if coulomb_accuracy is None:
        path = n2p2.export(directory, output, epoch, **units)  # 2G, or 4G with the default accuracy
    elif n2p2.model_generation(directory) == 4:
        path = n2p2_4g.export(directory, output, epoch, accuracy=coulomb_accuracy, **units)
    else:
        raise UserError(f"--coulomb-accuracy: {directory} holds a 2G model, which has no electrostatics")
    click.echo(f"wrote {path}")
