"""Output files: written atomically, and locked against a second writer.

Output files (datasets, checkpoints, model files, CSV tables) are written with
:func:`atomic_write`: the bytes go to a temporary file in the destination's folder, which is
synced and renamed over the destination only when the whole file was written. Any failure
(a full disk, a read-only or forbidden folder, an exception or Ctrl-C in the code writing the
file) removes the temporary file and leaves an existing destination untouched; a write
failure becomes one :class:`~mlip.errors.UserError` naming the destination, which the CLI
prints as one line with exit code 2.

:func:`output_lock` keeps two processes from writing one output at the same time.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlip.errors import UserError


def output_error(path: str | os.PathLike, exc: OSError) -> UserError:
    """The one-line error for an output ``path`` that could not be written."""
    return UserError(f"cannot write {path}: {exc.strerror or exc}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputFile:
    """A binary, seekable file-like object over the temporary file of :func:`atomic_write`.

    Writers given this object (``torch.save``, ``h5py.File``, ``csv`` through
    :func:`atomic_write_text`) see a plain file. The first failed write is remembered in
    :attr:`error`, so :func:`atomic_write` reports a failure as a write failure whatever
    exception the writer turned it into. With ``defer_errors`` the failure is not passed on
    to the writer at all: that write and every later one are kept in memory, reads see them,
    and the writer finishes its file normally. This is for libraries that cannot recover from
    a failed write (HDF5 crashes the process at exit after one); poll :attr:`error` to stop
    early.
    """

    def __init__(self, fd: int, defer_errors: bool = False) -> None:
        self._fd = fd
        self._defer = defer_errors
        self._pos = 0
        self._size = 0
        self._kept: list[tuple[int, bytes]] = []  # writes made after the failure, in order
        self.error: OSError | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write all of ``data`` at the current position; returns its length."""
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as exc:
                self.error = exc
                if not self._defer:
                    raise
        if self.error is not None:
            self._kept.append((self._pos, bytes(view)))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all to the end when negative) from the current position."""
        end = self._size if size < 0 else min(self._size, self._pos + size)
        data = bytearray(os.pread(self._fd, max(0, end - self._pos), self._pos))
        data.extend(bytes(max(0, end - self._pos - len(data))))  # writes that were kept in memory
        for start, kept in self._kept:
            lo, hi = max(start, self._pos), min(start + len(kept), end)
            if lo < hi:
                data[lo - self._pos : hi - self._pos] = kept[lo - start : hi - start]
        self._pos += len(data)
        return bytes(data)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer``; returns the number of bytes read."""
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position as :meth:`io.IOBase.seek` does; returns the new position."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        """Set the file's size (the current position when ``size`` is None); returns it."""
        size = self._pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
                if not self._defer:
                    raise
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to do: writes are not buffered."""


@contextmanager
def atomic_write(path: str | os.PathLike, defer_errors: bool = False) -> Iterator[OutputFile]:
    """Write the file ``path`` through the :class:`OutputFile` this yields, all or nothing.

    The parent folders are created. On success the temporary file is synced, given the
    usual permissions (``0o666`` less the umask) and renamed over ``path``. On any exception
    the temporary file is removed; if a write (or creating the file) failed, the exception
    raised is a :class:`~mlip.errors.UserError` "cannot write PATH: REASON", otherwise the
    exception passes unchanged. ``defer_errors``: see :class:`OutputFile`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise output_error(path, exc) from exc
    out = OutputFile(fd, defer_errors)
    try:
        try:
            yield out
        except BaseException as exc:
            if out.error is None or isinstance(exc, KeyboardInterrupt):
                raise
            raise output_error(path, out.error) from exc  # whatever the writer made of it
        try:
            if out.error is not None:
                raise out.error
            os.fsync(fd)
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp made it private
            os.replace(tmp, path)
        except OSError as exc:
            raise output_error(path, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`."""
    with atomic_write(path) as out:
        out.write(text.encode())


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of the output ``path`` (the file ``PATH.lock``, removed afterwards).

    Raises :class:`~mlip.errors.UserError` "PATH is being written by another process" when
    another process holds it: the second writer fails at once instead of both writing.
    """
    path = Path(path)
    lock = path.with_name(f"{path.name}.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{path} is being written by another process") from None
            try:
                if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                    break  # the lock file is still the one at ``lock``, not one its holder removed
            except FileNotFoundError:
                pass
            os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        yield
    finally:
        os.unlink(lock)
        os.close(fd)
