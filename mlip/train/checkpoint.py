"""Atomic checkpoint files, loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mlip.fileio import atomic_write


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` with :func:`mlip.fileio.atomic_write` (all or nothing;
    a failed write raises :class:`~mlip.errors.UserError`)."""
    with atomic_write(path) as out:
        torch.save(obj, out)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
