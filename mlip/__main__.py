"""``python -m mlip`` (also what ``torchrun -m mlip`` runs)."""

from mlip.cli import main

main()
