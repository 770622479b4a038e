"""The import layers: parsers → fingerprints → mlip, using a model needs no training code, and
nothing in the library imports the command line or the demo."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement of ``path`` (top level and in functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("parsers", ("torch", "fingerprints", "mlip")),
    ("fingerprints", ("mlip", "parsers")),
])
def test_lower_layers_do_not_import_upper_ones(package, forbidden):
    bad = {f"{p.relative_to(ROOT)}: {name}" for p in _modules(package) for name in _imports(p)
           if name.split(".")[0] in forbidden or name in forbidden}
    assert not bad, sorted(bad)


def test_library_does_not_import_the_cli_or_the_demo():
    inside = {"cli", "demo"}
    bad = []
    for path in _modules("mlip"):
        part = path.relative_to(ROOT / "mlip").parts[0]
        if part in inside or part == "__main__.py":
            continue
        bad += [f"{path.relative_to(ROOT)}: {name}" for name in _imports(path)
                if name.startswith(("mlip.cli", "mlip.demo"))]
    assert not bad, bad


def test_using_a_model_does_not_import_training():
    code = ("import sys, mlip.calculator, mlip.evaluate, mlip.inference, mlip.export\n"
            "print(sorted(m for m in sys.modules if m.startswith(('mlip.train', 'mlip.cli', 'mlip.demo'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
