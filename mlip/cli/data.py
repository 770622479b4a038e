"""``mlip data``: build and inspect HDF5 dataset files."""

from __future__ import annotations

import json
from typing import Any

import click

from mlip.cli import main
from mlip.cli.options import data_options


@main.group()
def data() -> None:
    """Build and inspect HDF5 dataset files.

    \b
    Example:
      mlip data build dumps/ -o data.h5 --types 1=Y
      mlip data info data.h5
    """


@data.command("build")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Dataset file to write.")
@data_options
def build(sources: tuple[str, ...], output: str, read_options: dict[str, Any]) -> None:
    """Read SOURCES (files or folders) and write one HDF5 dataset file.

    Folders are read with their sub-folders, file by file in natural name order
    (dump.2 before dump.10); the files read and those skipped (and why) are
    listed. Every frame is checked: a number that is not finite, a frame
    without atoms, two atoms closer than 0.1 Å or an empty file stop the build
    with an error naming the file and frame. The output appears only when
    every frame was read: a bad file leaves no output behind. A second build to
    the same output while one runs stops with an error.

    \b
    Example:
      mlip data build dumps/ -o data.h5 --types 1=Cu
      mlip data build run.dump -o data.h5 --types 1=Cu,2=Ni --energy-column c_pe
      mlip data build train.xyz outcars/ -o data.h5
      mlip data build mace_train.xyz -o data.h5 --energy-key REF_energy --forces-key REF_forces
    """
    from mlip.data import Dataset, build_dataset
    from mlip.fileio import output_lock

    with output_lock(output):  # a second build to the same output fails at once
        build_dataset(sources, output, echo=click.echo, **read_options)
        ds = Dataset(output)
        click.echo(
            f"wrote {output}: {len(ds)} frames, {ds.total_atoms} atoms, elements {' '.join(ds.elements)}, "
            f"from {len(ds.sources)} source file(s)"
        )


@data.command("info")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def info(path: str, as_json: bool) -> None:
    """Summarise a dataset file: frames, atoms, elements, energy per atom,
    which properties are present, and frames per source file.

    \b
    Example:
      mlip data info data.h5
      mlip data info data.h5 --json
    """
    from mlip.data import Dataset
    from mlip.data.summary import summarize

    s = summarize(Dataset(path))
    if as_json:
        click.echo(json.dumps(s))
        return
    click.echo(_format_summary(s))


def _format_summary(s: dict[str, Any]) -> str:
    n, per_frame = s["frames"], s["atoms_per_frame"]
    lines = [
        f"{s['path']}: mlip dataset (format {s['format_version']}, units {s['units']})",
        f"frames          {n}",
        f"atoms           {s['atoms']} ({per_frame['min']}-{per_frame['max']} per frame)",
        f"elements        {' '.join(s['elements'])}",
    ]
    e = s["energy_per_atom"]
    if e is None:
        lines.append("energy/atom     none")
    else:
        lines.append(
            f"energy/atom     min {e['min']:.6f}  mean {e['mean']:.6f}  max {e['max']:.6f}  "
            f"std {e['std']:.6f} eV ({e['frames']} frames)"
        )
    present = ", ".join(f"{k} {v}/{n}" for k, v in s["present"].items())
    lines.append(f"present         {present}")
    groups = ", ".join(f"{name} {count}" for name, count in s["groups"].items())
    lines.append(f"groups          {groups or 'none'}")
    lines.append(f"sources         {len(s['sources'])}")
    width = max(len(str(src["frames"])) for src in s["sources"])
    for src in s["sources"]:
        sha = src["sha256"][:12] if src["sha256"] else "-"
        lines.append(f"  {src['frames']:>{width}}  {sha:<12}  {src['path']}")
    return "\n".join(lines)
