"""Opening text files that may be compressed (``.gz``, ``.bz2``, ``.xz``), in binary mode."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import IO

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSED_SUFFIXES = tuple(_OPENERS)


def open_binary(path: str | Path) -> IO[bytes]:
    """Open ``path`` for binary reading, decompressing ``.gz``, ``.bz2`` and ``.xz``."""
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    return opener(path, "rb")


def strip_compression(name: str) -> str:
    """``name`` without a trailing ``.gz`` / ``.bz2`` / ``.xz``."""
    for suffix in COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
