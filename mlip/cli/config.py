"""``mlip config show``: the training config keys, their defaults and their meaning."""

from __future__ import annotations

import click

from mlip.cli import main


@main.group("config")
def config_group() -> None:
    """Training configuration (the keys of --config files and --set)."""


@config_group.command("show")
def show() -> None:
    """Print every config key with its default and one line of meaning.

    \b
    Example:
      mlip config show > my_config.yaml   # a complete config file to edit
    """
    from mlip.train.config import describe_defaults

    click.echo(describe_defaults())
