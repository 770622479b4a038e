"""The tutorial notebooks run top to bottom (nbclient, a kernel running this interpreter).

Each notebook runs in its own temporary working directory, so the files it writes (dumps,
runs, models) never land in the repository. The notebooks check physics themselves with
``assert`` (neighbour list against a brute-force image loop, RANN features against a
formula evaluated by hand, LAMMPS ``pair_style mlip`` against the ASE calculator); here we
also check what they print.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
# notebook -> figures it draws (inline PNG outputs)
FIGURES = {"01_fingerprints.ipynb": 4, "02_train_from_lammps_dumps.ipynb": 3, "03_md_with_ase.ipynb": 2,
           "04_lammps_pair_style.ipynb": 1, "05_long_range.ipynb": 2,
           "06_uncertainty_active_learning.ipynb": 2}
# notebook -> text its outputs must contain
EXPECTED = {
    "01_fingerprints.ipynb": ["neighbour list == brute force over images: 54 distances",
                              "shell at 2.5562 Å (0.7071 a): 12 neighbours"],
    "02_train_from_lammps_dumps.ipynb": ["ITEM: TIMESTEP energy, energy_weight, force_weight, nsims",
                                         "vacancy.dump"],
    "03_md_with_ase.ipynb": ["total energy: drift", "lattice constant: model"],
    "04_lammps_pair_style.ipynb": ["energy: LAMMPS", "total energy drift over 200 steps"],
    "05_long_range.ipynb": ["--- Ewald + charges", "RMS error of the profile"],
    "06_uncertainty_active_learning.ipynb": ["Spearman ρ (max force deviation vs max force error",
                                             "inside [", "force MAE after one round"],
}


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for this interpreter, first on JUPYTER_PATH: a user's own ``python3``
    kernelspec (pointing at another Python) cannot be picked up instead."""
    name = "mlip-tests-python"
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield name


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        # a cell's printed text as shown: the kernel may flush one print into several stream outputs
        parts.append("".join(out.get("text", "") for out in outputs if out.get("output_type") == "stream"))
        parts += [out.get("data", {}).get("text/plain", "") for out in outputs]
    return "\n".join(parts)


def test_every_tutorial_is_tested_and_committed_without_outputs() -> None:
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == sorted(EXPECTED)
    for name in EXPECTED:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= 5, f"{name}: explain the method"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs(name: str, tmp_path: Path, kernel_name: str) -> None:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel python:', sys.executable)"))
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=kernel_name, timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert pngs == FIGURES[name], f"{name}: {pngs} figures shown"  # training must not hide figures
    text = _text(nb)
    assert f"kernel python: {sys.executable}" in text
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: {expected!r} not in the outputs"
    print(f"{name}: {seconds:.1f} s")
