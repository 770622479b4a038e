"""Binary line reading with transparent decompression and line numbers.

:class:`LineReader` hands out single header lines, and parses tables of
numbers (the atom block of a dump frame) straight from its buffer into a
float64 array with the compiled scanner :mod:`parsers._dumpscan`. It keeps
only the current chunk in memory, and counts 1-based line numbers for error
messages.

Large tables without string columns are parsed by several threads (the
scanner releases the GIL; the result is the same as with one thread), and
can be parsed in the background (:meth:`LineReader.start_table`: the
scanner's worker threads start on the table while the caller does other
work, and the caller joins them when it waits for the table). Their number,
the caller included, is the ``threads`` argument of :class:`LineReader`, else
the environment variable ``MLIP_PARSE_THREADS``, else the number of CPU cores
this process may run on, at most 8; with one thread nothing runs in the
background.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from pathlib import Path
from typing import IO

import numpy as np

from parsers._dumpscan import MORE, Scan, start_rows

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
COMPRESSED_SUFFIXES = tuple(_OPENERS)


def open_binary(path: str | Path) -> IO[bytes]:
    """Open ``path`` for binary reading, decompressing ``.gz``, ``.bz2`` and ``.xz``."""
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    return opener(path, "rb")


def default_threads() -> int:
    """Threads for parsing tables: ``MLIP_PARSE_THREADS`` if set (>= 1), else
    the CPU cores this process may run on, at most 8."""
    text = os.environ.get("MLIP_PARSE_THREADS", "").strip()
    if text:
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"MLIP_PARSE_THREADS must be a positive integer, got {text!r}") from None
        if threads < 1:
            raise ValueError(f"MLIP_PARSE_THREADS must be a positive integer, got {text!r}")
        return threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def strip_compression(name: str) -> str:
    """``name`` without a trailing ``.gz`` / ``.bz2`` / ``.xz``."""
    for suffix in COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class LineReader:
    """Sequential line reader over a (possibly compressed) file.

    ``line`` is the number of the last line handed out (0 before the first).
    The file is read in chunks of ``chunk_size`` bytes into one reused buffer
    (grown only for a single line longer than half a chunk). ``threads``
    parse tables (None: :func:`default_threads`).
    """

    def __init__(self, path: str | Path, chunk_size: int = 4 << 20, threads: int | None = None) -> None:
        self.path = str(path)
        self.line = 0
        self.threads = default_threads() if threads is None else threads
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        self._file = open_binary(path)
        self._chunk = max(1, chunk_size)
        self._table_bytes = 0  # size of the last table read
        self._buf = bytearray()
        self._pos = 0  # start of the unread data in _buf
        self._end = 0  # end of the data in _buf
        self._eof = False
        self._peeked = (0, 0)  # end and number of the lines of the last peek_lines
        # the table started (its Scan, start, out, kinds, strings), whose scan may still read _buf
        self._pending: tuple[Scan, int, np.ndarray, bytes | None, list[str] | None] | None = None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _more(self) -> None:
        """Move the unread data (a partial line) to the front of the buffer and
        read more behind it: at least half a chunk, and at least as much as is
        unread, so a long line takes few passes. At end of file a last line
        without a newline gets one."""
        rest = self._end - self._pos
        if len(self._buf) - rest - 1 < max(self._chunk // 2, rest, 1):
            grown = bytearray(max(2 * len(self._buf), rest + self._chunk + 1))
            grown[:rest] = memoryview(self._buf)[self._pos : self._end]
            self._buf = grown
        elif self._pos:
            with memoryview(self._buf) as view:
                view[:rest] = view[self._pos : self._end]
        self._pos, self._end = 0, rest
        with memoryview(self._buf) as view:
            got = self._file.readinto(view[rest:-1])
        if got:
            self._end += got
            return
        self._eof = True
        if rest and self._buf[rest - 1] != 10:
            self._buf[rest] = 10
            self._end += 1

    def readline(self) -> bytes | None:
        """The next line without its line ending, or None at end of file."""
        if self._pending is not None:  # its workers may be reading the buffer this would move
            raise RuntimeError("LineReader used before wait_table()")
        end = self._buf.find(b"\n", self._pos, self._end)
        while end < 0:
            if self._eof:
                return None
            self._more()
            end = self._buf.find(b"\n", self._pos, self._end)
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 1
        self.line += 1
        return line.rstrip(b"\r")

    def peek_lines(self, count: int) -> list[bytes] | None:
        """The next ``count`` lines without their newlines (a carriage return
        before one is kept), not yet handed out: :meth:`skip_peeked` hands
        them out; None when the file ends first."""
        if self._pending is not None:
            raise RuntimeError("LineReader used before wait_table()")
        end = self._pos
        for _ in range(count):
            newline = self._buf.find(b"\n", end, self._end)
            while newline < 0:
                if self._eof:
                    return None
                offset = end - self._pos
                self._more()  # moves the unread data to the front of the buffer
                end = self._pos + offset
                newline = self._buf.find(b"\n", end, self._end)
            end = newline + 1
        self._peeked = (end, count)
        return bytes(self._buf[self._pos : end - 1]).split(b"\n")

    def skip_peeked(self) -> None:
        """Hand out the lines of the last :meth:`peek_lines` call (no other
        call in between), as that many :meth:`readline` calls would."""
        end, count = self._peeked
        self._pos = end
        self.line += count

    def read_table(
        self, out: np.ndarray, kinds: bytes | None = None, strings: list[str] | None = None
    ) -> int:
        """Parse the next lines as the rows of ``out`` (a C-contiguous (n_rows,
        n_columns) float64 array), each line exactly ``n_columns`` finite
        numbers separated by spaces or tabs, converted exactly as ``float()``
        does. ``kinds`` (one byte per column) marks string columns with 1:
        their words are appended to the list ``strings`` row by row and
        their entries in ``out`` are NaN; and columns to skip with 2: their
        fields must look like plain decimal numbers but are not converted
        (their entries in ``out`` are left as they are).

        Returns the number of rows read: ``n_rows``, or fewer when the next
        line is not such a row or the file ended first; the reader then stands
        before that line (``line`` counts the rows read)."""
        self.start_table(out, kinds, strings)
        return self.wait_table()

    def start_table(
        self, out: np.ndarray, kinds: bytes | None = None, strings: list[str] | None = None
    ) -> None:
        """:meth:`read_table` started in the background: with more than one
        thread, the scanner's workers parse the rows now in the buffer while
        the caller goes on. The reader may not be used until
        :meth:`wait_table` (which returns what read_table returns) has been
        called."""
        if self._pending is not None:
            raise RuntimeError("LineReader used before wait_table()")
        if not self._eof and self._end - self._pos < self._table_bytes:
            self._more()  # so that a table as long as the last one is parsed in one call (and its threads)
        limit = max(self._buf.rfind(b"\n", self._pos, self._end) + 1, self._pos)
        scan = start_rows(self._buf, self._pos, limit, out, 0, kinds, strings, self.threads)
        self._pending = (scan, self._pos, out, kinds, strings)

    def wait_table(self) -> int:
        """Finish the table started by :meth:`start_table` (the rows the
        workers have not parsed are parsed by the calling thread, and more of
        the file is read as needed); the number of rows read, as
        :meth:`read_table` says."""
        if self._pending is None:
            raise RuntimeError("no table started")
        (scan, start, out, kinds, strings), self._pending = self._pending, None
        row, self._pos, status = scan.finish()
        size = self._pos - start
        while status == MORE and not self._eof:
            self._more()
            start = self._pos
            limit = max(self._buf.rfind(b"\n", start, self._end) + 1, start)
            scan = start_rows(self._buf, start, limit, out, row, kinds, strings, self.threads)
            row, self._pos, status = scan.finish()
            size += self._pos - start
        self.line += row
        self._table_bytes = size
        return row
