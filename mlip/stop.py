"""Stopping on SIGINT and SIGTERM outside the training loop (reading data, setting up).

:func:`stop_on_signals` turns either signal into :class:`Stopped` where it arrives, and also
records it: code that C libraries call back (HDF5 writing through h5py's Python file driver)
may swallow an exception raised inside the callback, so long loops call :func:`raise_if_stopped`
between their steps and the stop is raised again there. The training loop installs its own
handlers (it stops at the next batch and saves a checkpoint).

:class:`Stopped` is not a KeyboardInterrupt: CPython 3.11 marks a KeyboardInterrupt raised
inside exec()'d code (a dataclass created during an import, say) as unhandled and then ends the
process with SIGINT, whatever exit code follows.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

_pending: list[int] = []


class Stopped(BaseException):
    """A stop asked for by signal ``signum`` (exit code 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def _on_signal(signum: int, _frame: Any) -> None:
    _pending.append(signum)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped` (and are remembered for
    :func:`raise_if_stopped`); the previous handlers come back afterwards."""
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _pending.clear()


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` if a signal asked for a stop that an exception did not deliver."""
    if _pending:
        raise Stopped(_pending[-1])
