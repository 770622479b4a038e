"""Errors raised by the readers."""

from __future__ import annotations


class ParseError(ValueError):
    """A file could not be read.

    Carries the ``path``, the 1-based ``line`` number (or None when the problem
    is not tied to a line), the 0-based ``frame`` number within the file (or
    None), and what was ``expected`` versus ``found``. Its string is one line,
    suitable for a CLI error message:
    ``dump.lammpstrj:17: expected 3 numbers for x y z, found 'nan'`` or
    ``train.xyz (frame 4): expected a finite energy, found nan``.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        expected: str,
        found: str | None = None,
        *,
        frame: int | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.frame = frame
        self.expected = expected
        self.found = found
        where = self.path if line is None else f"{self.path}:{line}"
        if frame is not None:
            where += f" (frame {frame})"
        msg = f"{where}: expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)
