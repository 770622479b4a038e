"""``mlip data build`` / ``mlip data info`` and the shared data options."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from mlip.cli import main
from mlip.cli.options import data_options, parse_types
from mlip.data import write_dataset
from parsers.frame import Frame


def run(*args: str):
    return CliRunner().invoke(main, list(args))


# -- --types and data_options ------------------------------------------------
def test_parse_types():
    assert parse_types("1=Y") == {1: "Y"}
    assert parse_types("1=Cu, 2=Ni") == {1: "Cu", 2: "Ni"}
    assert parse_types(("1=Cu", "2=Ni,3=O", "1=Cu")) == {1: "Cu", 2: "Ni", 3: "O"}
    assert parse_types(()) == {}
    for bad, message in [
        ("1:Cu", "TYPE=ELEMENT"),
        ("a=Cu", "must be an integer"),
        ("0=Cu", "start at 1"),
        ("1=Qq", "unknown element"),
        (("1=Cu", "1=Ni"), "both Cu and Ni"),
    ]:
        with pytest.raises(click.BadParameter, match=message):
            parse_types(bad)


@click.command()
@data_options
def _echo_options(read_options):
    click.echo(json.dumps(read_options, sort_keys=True))


def test_data_options_decorator(tmp_path):
    log = tmp_path / "log.lammps"
    log.write_text("Step PotEng\n")
    runner = CliRunner()
    result = runner.invoke(_echo_options, [])
    assert result.exit_code == 0 and json.loads(result.output) == {}
    result = runner.invoke(
        _echo_options,
        [
            "--types",
            "1=Cu",
            "--types",
            "2=Ni",
            "--energy-column",
            "c_pe",
            "--log",
            str(log),
            "--format",
            "lammps",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "energy_column": "c_pe",
        "format": "lammps",
        "log": str(log),
        "types": {"1": "Cu", "2": "Ni"},
    }
    result = runner.invoke(_echo_options, ["--types", "1=Zz"])
    assert result.exit_code == 2 and "unknown element" in result.output
    result = runner.invoke(_echo_options, ["--log", str(tmp_path / "missing.log")])
    assert result.exit_code == 2 and "does not exist" in result.output


# -- info ----------------------------------------------------------------------
@pytest.fixture
def small_dataset(tmp_path):
    """Two sources; energies known, forces on three of five frames."""
    src = tmp_path / "a.xyz"
    src.write_text("stand-in source\n")
    frames = []
    for i, n in enumerate([2, 4, 3, 5, 1]):
        frames.append(
            Frame(
                numbers=[29] * (n - 1) + [8],
                positions=np.arange(3 * n, dtype=float).reshape(n, 3),
                cell=np.eye(3) * 10,
                pbc=[True] * 3,
                energy=None if i == 4 else -3.5 * n + 0.1 * i,
                forces=np.ones((n, 3)) if i < 3 else None,
                source=str(src) if i < 3 else "other.dump",
                index=i,
            )
        )
    path = tmp_path / "data.h5"
    write_dataset(frames, path)
    return path, frames, src


def test_info_text_and_json(small_dataset):
    path, frames, src = small_dataset
    result = run("data", "info", str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "frames          5" in out
    assert "atoms           15 (1-5 per frame)" in out
    assert "elements        O Cu" in out
    assert "energy 4/5, forces 3/5, stress 0/5, charges 0/5" in out
    per_atom = np.array([f.energy / len(f) for f in frames if f.energy is not None])
    assert f"mean {per_atom.mean():.6f}" in out and f"std {per_atom.std():.6f}" in out
    assert "(4 frames)" in out

    result = run("data", "info", str(path), "--json")
    assert result.exit_code == 0
    s = json.loads(result.output)
    assert s["frames"] == 5 and s["atoms"] == 15 and s["elements"] == ["O", "Cu"]
    e = s["energy_per_atom"]
    assert e["frames"] == 4
    assert e["min"] == per_atom.min() and e["max"] == per_atom.max()
    assert e["mean"] == pytest.approx(per_atom.mean(), abs=1e-14)
    assert [(x["path"], x["frames"]) for x in s["sources"]] == [(str(src), 3), ("other.dump", 2)]
    assert s["sources"][1]["sha256"] == ""  # not a file: no hash
    assert len(s["sources"][0]["sha256"]) == 64


def test_info_errors(tmp_path):
    result = run("data", "info", str(tmp_path / "missing.h5"))
    assert result.exit_code == 2
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    result = run("data", "info", str(bad))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "not an HDF5 file" in result.stderr
