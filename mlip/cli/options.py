"""Command-line options shared by several subcommands.

:func:`data_options` adds the options that say how to read training data
(``--types``, ``--energy-column``, ``--log``, ``--format``, ``--energy-key``,
``--forces-key``, ``--stress-key``) and hands the command one ``read_options``
dict, ready for ``parsers.read(path, **read_options)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from mlip.data.build import read_options


def parse_types(values: str | tuple[str, ...] | list[str]) -> dict[int, str]:
    """Parse LAMMPS type → element maps: ``"1=Y,2=Ni"``, or several such strings
    (a repeated option). Returns ``{1: "Y", 2: "Ni"}``.

    Raises :class:`click.BadParameter` for a malformed entry, a type that is not a
    positive integer, an unknown element symbol, or one type mapped twice to
    different elements.
    """
    from ase.data import atomic_numbers

    if isinstance(values, str):
        values = [values]
    mapping: dict[int, str] = {}
    for value in values:
        for item in filter(None, (s.strip() for s in value.split(","))):
            key, sep, symbol = (s.strip() for s in item.partition("="))
            if not sep or not key or not symbol:
                raise click.BadParameter(f"expected TYPE=ELEMENT such as 1=Cu, found {item!r}")
            try:
                type_id = int(key)
            except ValueError:
                raise click.BadParameter(
                    f"LAMMPS type must be an integer, found {key!r} in {item!r}"
                ) from None
            if type_id < 1:
                raise click.BadParameter(f"LAMMPS types start at 1, found {type_id} in {item!r}")
            if symbol not in atomic_numbers or symbol == "X":
                raise click.BadParameter(f"unknown element symbol {symbol!r} in {item!r}")
            if mapping.get(type_id, symbol) != symbol:
                raise click.BadParameter(f"type {type_id} given as both {mapping[type_id]} and {symbol}")
            mapping[type_id] = symbol
    return mapping


def _types_callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[int, str]:
    return parse_types(value)


def _format_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from parsers.read import normalise_format

    try:
        return normalise_format(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_DATA_OPTIONS = [
    click.option(
        "--types",
        "types",
        multiple=True,
        callback=_types_callback,
        metavar="TYPE=EL[,...]",
        help="Map LAMMPS atom types to elements, e.g. 1=Y or 1=Cu,2=Ni (repeatable).",
    ),
    click.option(
        "--energy-column",
        metavar="COLUMN",
        help="Per-atom dump column whose sum is the frame energy (eV), e.g. c_pe.",
    ),
    click.option(
        "--log",
        type=click.Path(exists=True, dir_okay=False),
        help="LAMMPS log whose thermo PotEng gives each dump frame's energy (matched by timestep).",
    ),
    click.option(
        "--format",
        "format",
        metavar="FORMAT",
        callback=_format_callback,
        help="Force the input format instead of detecting it from content and name "
        "(lammps-dump, extxyz, mlearn, runner, vasp-outcar, vasp-xml).",
    ),
    click.option(
        "--energy-key",
        metavar="KEY",
        help="extxyz info key holding the energy (eV), e.g. REF_energy "
        "(default: the calculator energy, else REF_energy).",
    ),
    click.option(
        "--forces-key",
        metavar="KEY",
        help="extxyz per-atom property holding the forces (eV/Å), e.g. REF_forces "
        "(default: the calculator forces, else REF_forces).",
    ),
    click.option(
        "--stress-key",
        metavar="KEY",
        help="extxyz info key holding the stress (eV/Å³, 9 or 6 Voigt numbers), e.g. REF_stress "
        "(default: the calculator stress, else REF_stress).",
    ),
]


def data_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a click command that reads data files: adds ``--types``,
    ``--energy-column``, ``--log``, ``--format``, ``--energy-key``,
    ``--forces-key`` and ``--stress-key`` and passes the command a single
    ``read_options`` keyword (see :func:`read_options`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, types: dict[int, str], energy_column: str | None, log: str | None,
                format: str | None, energy_key: str | None, forces_key: str | None,
                stress_key: str | None, **kwargs: Any) -> Any:
        options = read_options(types=types, energy_column=energy_column, log=log, format=format,
                               energy_key=energy_key, forces_key=forces_key, stress_key=stress_key)
        return func(*args, read_options=options, **kwargs)

    for option in reversed(_DATA_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
