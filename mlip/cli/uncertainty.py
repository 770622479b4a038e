"""``mlip committee`` and ``mlip select``: committee models and the frames they choose to label."""

from __future__ import annotations

from typing import Any

import click

from mlip.cli import main
from mlip.cli.options import data_options


@main.command("committee")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The committee model file.")
def committee_cmd(runs: tuple[str, ...], output: str) -> None:
    """Combine independently trained RUNS of the same descriptors into one committee model.

    Each run contributes its exported weights (its train.export checkpoint); a run trained with
    --committee contributes all its members. The runs must share elements, descriptors, physics
    terms, repulsion and dtype (the first difference is named); the first run's normalisation and
    reference energies are shared, the other members are rewritten into them exactly. The model
    predicts the members' mean and their deviation (energy_deviation, force_deviation).

    \b
    Example:
      mlip train dumps/ --seed 1 --out runs/a
      mlip train dumps/ --seed 2 --out runs/b
      mlip train dumps/ --seed 3 --out runs/c
      mlip committee runs/a runs/b runs/c -o committee.pt
    """
    from mlip.export import lammps_file
    from mlip.train.combine import write_committee

    path, meta = write_committee(list(runs), output)
    click.echo(f"wrote {path}: a committee of {meta['committee']} members from {len(runs)} runs")
    if lammps_file(path).is_file():
        click.echo(f"wrote {lammps_file(path)} (LAMMPS: use its pair_style hybrid/overlay lines)")


@main.command("select")
@click.argument("trajectories", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", required=True, type=click.Path(exists=True),
              help="A committee model.pt (or its run directory).")
@click.option("--lo", type=float, default=0.05, show_default=True,
              help="Lower end of the max force deviation window, eV/Å: below it the members agree.")
@click.option("--hi", type=float, default=0.30, show_default=True,
              help="Upper end, eV/Å: above it structures are usually broken beyond use.")
@click.option("-n", "n_frames", type=int, default=50, show_default=True, help="Frames to choose.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="extxyz file of the chosen frames, without labels.")
@click.option("--weighting", type=click.Choice(["descriptors", "deviation"]), default="descriptors",
              show_default=True, help="Farthest-point sampling on descriptor distances, or on distances "
              "times the max force deviation (favours uncertain frames).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Frames per model call.")
@click.option("--device", default="cpu", show_default=True)
@data_options
def select_cmd(trajectories: tuple[str, ...], model: str, lo: float, hi: float, n_frames: int, output: str,
               weighting: str, batch_size: int, device: str, read_options: dict[str, Any]) -> None:
    """Choose frames of TRAJECTORIES to label: max force deviation of a committee MODEL in
    [--lo, --hi], spread out by farthest-point sampling.

    Reads LAMMPS dumps (give --types), extxyz and ASE .traj files. Prints how many frames fell
    below, inside and above the window; writes the chosen ones as extxyz, with their source, index
    and deviations in the comment line, for a reference calculation. Then train the next round
    from the old run: mlip train OLD_DATA LABELLED.extxyz --init RUN.

    \b
    Example:
      mlip select md.dump --types 1=Cu --model committee.pt --lo 0.05 --hi 0.3 -n 50 -o candidates.extxyz
    """
    from mlip.select import select_frames, write_selection

    found = select_frames(model, list(trajectories), lo, hi, n_frames, read_options, weighting, batch_size,
                          device)
    total = found.below + found.inside + found.above
    click.echo(f"{total} frames: {found.below} below {lo:g} eV/Å, {found.inside} inside [{lo:g}, {hi:g}], "
               f"{found.above} above {hi:g} (max force deviation)")
    if not found.chosen:
        click.echo(f"no frame inside the window: nothing written to {output}")
        return
    write_selection(found, output)
    click.echo(f"wrote {output}: {len(found.chosen)} frames chosen by farthest-point sampling ({weighting})")
