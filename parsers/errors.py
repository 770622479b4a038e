"""Errors raised by the readers."""

from __future__ import annotations


class ParseError(ValueError):
    """A file could not be read.

    Carries the ``path``, the 1-based ``line`` number (or None when the problem
    is not tied to a line), and what was ``expected`` versus ``found``. Its
    string is one line, suitable for a CLI error message:
    ``dump.lammpstrj:17: expected 3 numbers for x y z, found 'nan'``.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        expected: str,
        found: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.expected = expected
        self.found = found
        where = self.path if line is None else f"{self.path}:{line}"
        msg = f"{where}: expected {expected}"
        if found is not None:
            msg += f", found {found}"
        super().__init__(msg)
