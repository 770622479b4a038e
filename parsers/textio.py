"""Binary line reading with transparent decompression and line numbers.

:class:`LineReader` hands out single header lines and whole blocks of ``n``
lines as one ``bytes`` object, so the atom block of a dump frame can be parsed
in bulk. It keeps only the current chunk (and, for a block, the block) in
memory, and counts 1-based line numbers for error messages.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import IO

import numpy as np

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


class LineReader:
    """Sequential line reader over a (possibly compressed) file.

    ``line`` is the number of the last line handed out (0 before the first).
    """

    def __init__(self, path: str | Path, chunk_size: int = 1 << 24) -> None:
        self.path = str(path)
        self.line = 0
        self._file = open_binary(path)
        self._chunk = chunk_size
        self._buf = b""
        self._pos = 0
        self._eof = False

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _more(self) -> None:
        """Append the next chunk to the unread part of the buffer (doubling the
        read size while the unread part is large). At end of file a last line
        without a newline gets one."""
        rest = self._buf[self._pos :]
        chunk = self._file.read(max(self._chunk, len(rest)))
        self._pos = 0
        if chunk:
            self._buf = rest + chunk
            return
        self._eof = True
        self._buf = rest + b"\n" if rest and not rest.endswith(b"\n") else rest

    def readline(self) -> bytes | None:
        """The next line without its line ending, or None at end of file."""
        end = self._buf.find(b"\n", self._pos)
        while end < 0:
            if self._eof:
                return None
            self._more()
            end = self._buf.find(b"\n", self._pos)
        line = self._buf[self._pos : end]
        self._pos = end + 1
        self.line += 1
        return line.rstrip(b"\r")

    def read_lines(self, n: int) -> tuple[bytes, int]:
        """Up to ``n`` further lines as one block (each ending in a newline),
        and how many lines it holds (fewer than ``n`` only at end of file)."""
        if n <= 0:
            return b"", 0
        end = self._nth_newline(n)
        while end < 0 and not self._eof:
            self._more()
            end = self._nth_newline(n)
        take = n
        if end < 0:  # end of file: hand out what is left
            take = self._buf.count(b"\n", self._pos)
            end = len(self._buf) - 1
        block = self._buf[self._pos : end + 1]
        self._pos = end + 1
        self.line += take
        return block, take

    def _nth_newline(self, k: int) -> int:
        """Offset of the ``k``-th newline after the read position, or -1 when
        the buffer holds fewer. Searches (vectorised) a window sized from the
        first line's length, growing it only when too short."""
        buf, pos = self._buf, self._pos
        first = buf.find(b"\n", pos)
        if first < 0 or k == 1:
            return first
        view = np.frombuffer(buf, dtype=np.uint8)
        window = (first - pos + 1) * k * 5 // 4 + 256
        while True:
            stop = min(len(buf), pos + window)
            newlines = np.flatnonzero(view[pos:stop] == 10)
            if len(newlines) >= k:
                return pos + int(newlines[k - 1])
            if stop == len(buf):
                return -1
            window *= 2
