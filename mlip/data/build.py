"""Build a dataset file from source files through :func:`parsers.read`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from mlip.data.store import write_dataset
from parsers.frame import Frame


def read_options(
    types: dict[int, str] | None = None,
    energy_column: str | None = None,
    log: str | None = None,
    format: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``parsers.read``, leaving out the ones not given."""
    options = {"types": types or None, "energy_column": energy_column, "log": log, "format": format}
    return {k: v for k, v in options.items() if v is not None}


def read_sources(sources: Sequence[str | os.PathLike], **read_options: Any) -> Iterator[Frame]:
    """Frames of every source (file or folder) in order, read by :func:`parsers.read`
    with ``read_options`` (``format``, ``types``, ``energy_column``, ``log``)."""
    import parsers

    for source in sources:
        yield from parsers.read(source, **read_options)


def build_dataset(sources: Sequence[str | os.PathLike], path: str | os.PathLike, **read_options: Any) -> int:
    """Read ``sources`` and write them to the dataset file ``path``; returns the number
    of frames. A parse error leaves no file behind (see :func:`write_dataset`)."""
    return write_dataset(read_sources(sources, **read_options), path)
