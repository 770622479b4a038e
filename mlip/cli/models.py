"""``mlip export``, ``mlip info`` and ``mlip evaluate``: work with trained models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mlip.cli import main
from mlip.cli.options import data_options


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output file (default RUN_DIR/model.pt).")
@click.option("--checkpoint", default=None,
              help="Checkpoint of RUN_DIR to export: last.pt or best.pt (default: the run's train.export).")
@click.option("--lammps-overlay/--no-lammps-overlay", default=True, show_default=True,
              help="Leave the parameter-free terms LAMMPS has (D3, ZBL) to LAMMPS' own pair styles, "
                   "with the lines written to OUTPUT.lammps.")
def export_cmd(run_dir: str, output: str | None, checkpoint: str | None, lammps_overlay: bool) -> None:
    """Export the EMA weights of a run's checkpoint to one TorchScript file.

    With D3 or ZBL in the model, LAMMPS computes them itself: use the pair_style hybrid/overlay
    lines written next to the model (model.pt.lammps); a plain pair_style mlip stops with an error.

    \b
    Example:
      mlip export runs/dumps -o cu.pt
    """
    from mlip.export import lammps_file
    from mlip.train.export_run import export_run

    out = export_run(run_dir, output, checkpoint, lammps_overlay)
    click.echo(f"wrote {out}")
    if lammps_file(out).is_file():
        click.echo(f"wrote {lammps_file(out)} (LAMMPS: use its pair_style hybrid/overlay lines)")


def _read_meta(path: Path) -> dict[str, Any]:
    from mlip.inference import load_model

    return load_model(path)[1]


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON (for scripts).")
def info(model: str, as_json: bool) -> None:
    """Print the metadata of a model file (or run directory) as a table.

    \b
    Examples:
      mlip info runs/dumps/model.pt
      mlip info runs/dumps --json
    """
    meta = _read_meta(Path(model))
    click.echo(json.dumps(meta, indent=2) if as_json else format_info(meta))


def format_info(meta: dict[str, Any]) -> str:
    """The metadata of a model as ``key  value`` lines, one descriptor per line."""
    rows: list[tuple[str, str]] = []
    for key, value in meta.items():
        if key == "descriptors" and isinstance(value, list):
            for k, entry in enumerate(value):
                options = ", ".join(f"{name} {v}" for name, v in entry.items() if name != "type")
                rows.append(("descriptors" if k == 0 else "", f"{entry.get('type')} ({options})"))
        elif key == "cutoff":
            rows.append((key, f"{value:g} Å"))
        elif isinstance(value, list):
            rows.append((key, ", ".join(map(str, value)) or "none"))
        elif isinstance(value, bool):
            rows.append((key, "yes" if value else "no"))
        else:
            rows.append((key, "-" if value is None else str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write per-frame errors to CSV.")
@click.option("--parity", "parity_path", type=click.Path(dir_okay=False),
              help="Write the energy parity plot to FILE and, with forces, the force parity plot to "
                   "FILE_forces.png (FILE's stem + _forces).")
@click.option("--device", default="cpu", show_default=True)
@data_options
def evaluate(model: str, data: tuple[str, ...], csv_path: str | None, parity_path: str | None, device: str,
             read_options: dict[str, Any]) -> None:
    """Errors of MODEL (model.pt or run directory) on DATA, overall and per source/group.

    \b
    Example:
      mlip evaluate runs/dumps test_dumps/ --types 1=Cu --csv errors.csv
    """
    from mlip.evaluate import evaluate_model

    evaluate_model(model, list(data), read_options, device=device, csv_path=csv_path,
                   parity_path=parity_path, echo=click.echo)
