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
def export_cmd(run_dir: str, output: str | None, checkpoint: str | None) -> None:
    """Export the EMA weights of a run's checkpoint to one TorchScript file.

    \b
    Example:
      mlip export runs/dumps -o cu.pt
    """
    from mlip.train.export_run import export_run

    out = export_run(run_dir, output, checkpoint)
    click.echo(f"wrote {out}")


def _read_meta(path: Path) -> dict[str, Any]:
    from mlip.inference import load_model

    return load_model(path)[1]


@main.command()
@click.argument("model", type=click.Path())
def info(model: str) -> None:
    """Print the metadata of a model file (or run directory).

    \b
    Example:
      mlip info runs/dumps/model.pt
    """
    click.echo(json.dumps(_read_meta(Path(model)), indent=2))


@main.command()
@click.argument("model", type=click.Path())
@click.argument("data", nargs=-1, required=True, type=click.Path())
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Write per-frame errors to CSV.")
@click.option("--parity", "parity_path", type=click.Path(dir_okay=False), help="Write an energy parity plot.")
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
