"""model.pt: metadata, ``mlip info``, and loading with plain torch where mlip cannot be imported."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from calculator_models import ELEMENTS, physics_model, plain_model, triclinic_cell
from click.testing import CliRunner

from fingerprints import default_config
from fingerprints.neighbors import neighbor_list
from mlip import MLIPCalculator, __version__
from mlip.cli import main
from mlip.errors import UserError
from mlip.export import export_model, lammps_file, lammps_overlay_terms, model_metadata, read_metadata
from mlip.physics import D3Dispersion

METADATA_KEYS = {"elements", "cutoff", "dtype", "mlip_version", "physics", "long_range", "charges",
                 "descriptors", "data_hash", "units",
                 "lammps_overlay", "lammps_commands", "lammps_coulomb",
                 "min_pair_distance", "min_pair_distance_fallback", "repulsion", "feature_range",
                 "extrapolation_margin", "committee"}


@pytest.fixture(scope="module", params=["plain", "physics"])
def exported(request, tmp_path_factory):
    model = plain_model() if request.param == "plain" else physics_model()
    meta = model_metadata(model, default_config(ELEMENTS), data_hash="0123abcd")
    path = export_model(model, tmp_path_factory.mktemp(request.param) / "model.pt", meta)
    return model, path


def test_metadata_travels_in_the_file(exported):
    model, path = exported
    meta = read_metadata(path)
    assert set(meta) == METADATA_KEYS
    assert meta["elements"] == ELEMENTS
    assert meta["cutoff"] == model.cutoff
    assert meta["dtype"] == "float64"
    assert meta["mlip_version"] == __version__
    assert meta["units"] == "metal"
    assert meta["data_hash"] == "0123abcd"
    assert meta["descriptors"] == default_config(ELEMENTS)
    assert meta["physics"] == [t.name for t in model.physics if t.name != "core"]
    assert meta["long_range"] == any(t.long_range for t in model.physics)
    assert meta["lammps_overlay"] == meta["lammps_commands"] == []
    assert not lammps_file(path).exists()
    pairs = [f"{a}-{b}" for k, a in enumerate(ELEMENTS) for b in ELEMENTS[k:]]
    if meta["repulsion"] == "auto":  # built from a config, untrained: r_min is the fallback of every pair
        assert list(meta["min_pair_distance"]) == meta["min_pair_distance_fallback"] == pairs
    else:
        assert meta["min_pair_distance"] == {} and meta["min_pair_distance_fallback"] == []
    assert meta["feature_range"] is False


def test_mlip_info_prints_the_metadata(exported, tmp_path):
    _, path = exported
    result = CliRunner().invoke(main, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == read_metadata(path)
    run_dir = path.parent  # a run directory holding model.pt works too
    in_dir = CliRunner().invoke(main, ["info", str(run_dir), "--json"])
    assert json.loads(in_dir.output) == read_metadata(path)
    missing = CliRunner().invoke(main, ["info", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2
    assert "model file not found" in missing.output


BLOCKED_LOADER = textwrap.dedent("""
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mlip", "fingerprints", "parsers"):
                raise ImportError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Block())
    for name in ("mlip", "fingerprints", "parsers"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(name + " is importable")

    import numpy as np
    import torch

    data = np.load(sys.argv[2])
    extra = {"metadata.json": ""}
    model = torch.jit.load(sys.argv[1], _extra_files=extra)
    f64 = torch.float64
    out = model(torch.tensor(data["positions"], dtype=f64), torch.tensor(data["species"]),
                torch.tensor(data["edge_index"]), torch.tensor(data["edge_shift"], dtype=f64),
                torch.tensor(data["cell"], dtype=f64), torch.tensor(data["pbc"]), int(data["n_local"]))
    ours = sorted(m for m in sys.modules if m.split(".")[0] in ("mlip", "fingerprints", "parsers"))
    print(json.dumps({"energy": float(out["energy"]), "forces": out["forces"].tolist(),
                      "virial": out["virial"].tolist(), "modules": ours,
                      "elements": json.loads(extra["metadata.json"])["elements"]}))
""")


def test_model_file_loads_without_mlip(exported, tmp_path):
    model, path = exported
    atoms = triclinic_cell()
    ei, _, shift = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    species = np.array([ELEMENTS.index(s) for s in atoms.get_chemical_symbols()])
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, positions=atoms.positions, species=species, edge_index=ei, edge_shift=shift,
             cell=atoms.cell.array, pbc=atoms.pbc, n_local=len(atoms))
    script = tmp_path / "load.py"
    script.write_text(BLOCKED_LOADER)
    # Run from tmp_path so that the repository (mlip, fingerprints, parsers) is not on sys.path.
    proc = subprocess.run([sys.executable, str(script), str(path), str(inputs)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["modules"] == []
    assert got["elements"] == ELEMENTS
    f64 = torch.float64
    ref = model(torch.tensor(atoms.positions, dtype=f64), torch.as_tensor(species), torch.as_tensor(ei),
                torch.tensor(shift, dtype=f64), torch.tensor(atoms.cell.array, dtype=f64),
                torch.tensor(atoms.pbc), len(atoms))
    assert got["energy"] == pytest.approx(float(ref["energy"].detach()), abs=1e-10)
    np.testing.assert_allclose(got["forces"], ref["forces"].detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(got["virial"], ref["virial"].detach().numpy(), atol=1e-10)


def test_lammps_overlay_export(tmp_path):
    """Export with the fixed terms handed to LAMMPS: metadata and the ``model.pt.lammps`` lines; the
    ASE path (``compute``) of the file still has every term; the caller's model is left as it was;
    exporting again without the overlay removes the stale lines."""
    model = physics_model()  # ZBL, D3, Ewald (charges)
    assert lammps_overlay_terms(model) == ["zbl", "d3"]
    path = export_model(model, tmp_path / "model.pt", model_metadata(model, lammps_overlay=["zbl", "d3"]))
    meta = read_metadata(path)
    assert meta["lammps_overlay"] == ["zbl", "d3"]
    assert meta["long_range"] is True  # Ewald stays in the model, and runs on LAMMPS' kspace:
    assert (meta["lammps_coulomb"]["cutoff"], meta["lammps_coulomb"]["accuracy"]) == (5.0, 1e-8)
    assert meta["cutoff"] == model.cutoff < model.physics[1].energy_cutoff
    assert meta["lammps_commands"] == [
        "pair_style hybrid/overlay mlip model.pt coul/long 5 zbl 1.0 2.2 dispersion/d3 bj pbe 9.0 8.0",
        "pair_coeff * * mlip Ni Cu", "pair_coeff * * coul/long",
        "pair_coeff 1 1 zbl 28 28", "pair_coeff 1 2 zbl 28 29", "pair_coeff 2 2 zbl 29 29",
        "pair_coeff * * dispersion/d3 Ni Cu", "neigh_modify one 2000 page 100000",
        "pair_modify pair coul/long table 0", "kspace_style pppm 1e-08",
    ]
    lines = lammps_file(path).read_text().splitlines()
    assert lammps_file(path).name == "model.pt.lammps"
    assert [x for x in lines if not x.startswith("#")] == meta["lammps_commands"]
    assert [t.lammps_overlay for t in model.physics] == [False, False, False]
    assert model.long_range
    atoms = triclinic_cell()
    eager = atoms.copy()
    eager.calc = MLIPCalculator(model)
    atoms.calc = MLIPCalculator(path)
    assert atoms.get_potential_energy() == pytest.approx(eager.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), eager.get_forces(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), eager.get_stress(), atol=1e-12)

    export_model(model, path, model_metadata(model))  # D3 in the model: no overlay, no Coulomb path
    assert read_metadata(path)["lammps_overlay"] == []
    assert read_metadata(path)["lammps_coulomb"] is None
    assert not lammps_file(path).exists()


def test_lammps_overlay_choice():
    """D3 alone handed to LAMMPS makes the LAMMPS path short-range; D3 terms LAMMPS cannot compute
    (explicit BJ parameters, smooth weights, two of a kind) stay in the model."""
    model = plain_model()
    model.physics.append(D3Dispersion(ELEMENTS, cutoff=9.0, cn_cutoff=8.0))
    model.long_range = True
    assert model_metadata(model)["long_range"] is True
    assert model_metadata(model, lammps_overlay=["d3"])["long_range"] is False
    model.physics[-1] = D3Dispersion(ELEMENTS, functional=None, s6=1.0, s8=0.8, a1=0.4, a2=4.4)
    assert lammps_overlay_terms(model) == []
    with pytest.raises(UserError, match="LAMMPS cannot compute the physics term"):
        model_metadata(model, lammps_overlay=["d3"])
    model.physics[-1] = D3Dispersion(ELEMENTS, grid_fallback=False)
    assert lammps_overlay_terms(model) == []
    model.physics[-1] = D3Dispersion(ELEMENTS)
    model.physics.append(D3Dispersion(ELEMENTS, functional="pbe0"))
    assert lammps_overlay_terms(model) == []


def test_mlip_export_writes_the_overlay(tmp_path):
    """``mlip export`` (export_run) hands D3 and ZBL to LAMMPS by default, or keeps them in the model."""
    import yaml

    from mlip.train.config import load_run_config
    from mlip.train.export_run import export_run
    from mlip.train.model_builder import build_potential

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    model_cfg = {"elements": ELEMENTS, "physics": ["zbl", {"name": "d3", "cutoff": 9.0}], "hidden": [8]}
    (run / "config.yaml").write_text(yaml.safe_dump({"model": model_cfg}))
    config = load_run_config(run / "config.yaml")  # as export_run reads it
    model = build_potential(config["model"], ELEMENTS)
    torch.save({"ema": model.state_dict()}, run / "checkpoints" / f"{config['train']['export']}.pt")
    path = export_run(run)
    meta = read_metadata(path)
    assert path == run / "model.pt"
    assert meta["lammps_overlay"] == ["zbl", "d3"]
    assert meta["long_range"] is False
    lines = lammps_file(path).read_text().splitlines()
    assert [x for x in lines if not x.startswith("#")] == meta["lammps_commands"]
    assert "dispersion/d3 bj pbe 9.0 12.0" in meta["lammps_commands"][0]
    assert meta["lammps_commands"][-1] == "neigh_modify one 3000 page 100000"  # (14 Å)³ at 0.2 Å⁻³
    export_run(run, lammps_overlay=False)
    assert read_metadata(path)["lammps_overlay"] == []
    assert read_metadata(path)["long_range"] is True
    assert not lammps_file(path).exists()
