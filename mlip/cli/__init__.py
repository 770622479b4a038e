"""The ``mlip`` command line.

Each subcommand lives in its own module of this package and is registered
below. Errors the user can fix (:class:`mlip.errors.UserError`,
:class:`parsers.ParseError`, a bad option or argument, a missing file, a file that cannot be
written for want of permission or space) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import importlib
import sys

import click

from mlip import __version__
from mlip.errors import UserError
from parsers.errors import ParseError

# A file the user named cannot be written (or read): permissions, a full disk, a read-only disk.
_FILE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (UserError, ParseError, FileNotFoundError) as exc:
            click.echo(f"mlip: error: {exc}", err=True)
            sys.exit(2)
        except click.ClickException as exc:  # a bad option or argument: one line too, not click's three
            usage = isinstance(exc, click.UsageError) and exc.ctx is not None
            hint = f" (see: {exc.ctx.command_path} --help)" if usage else ""
            click.echo(f"mlip: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            if exc.errno not in _FILE_ERRNOS or exc.filename is None:
                raise
            click.echo(f"mlip: error: {exc.filename}: {exc.strerror}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlip")
def main() -> None:
    """mlip: machine-learned interatomic potentials.

    \b
    Example:
      mlip train dumps/            # train a potential on a folder of dumps
      mlip info runs/dumps/model.pt
    """


# Subcommand modules register themselves on import; add one name per module.
COMMAND_MODULES = ["data", "models", "train", "config", "lammps", "demo", "interop", "uncertainty"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"mlip.cli.{_name}")
