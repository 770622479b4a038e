"""The config schema: every key has a rule and a meaning, bad values are named with what is
expected, and `mlip config show` prints the defaults with their meaning."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner

from mlip.cli import main
from mlip.errors import UserError
from mlip.train.config import DEFAULTS, SCHEMA, check_config, leaves, load_config


def test_every_default_key_has_a_rule_and_a_meaning_and_passes_it():
    missing = [key for key, _ in leaves(DEFAULTS) if key not in SCHEMA]
    assert not missing, f"keys without a schema entry: {missing}"
    assert all(key.meaning for key in SCHEMA.values())
    assert check_config(DEFAULTS) == DEFAULTS


@pytest.mark.parametrize("key, value, message", [
    ("train.epochs", "abc", "train.epochs = 'abc': expected an integer >= 1"),
    ("train.epochs", -3, "train.epochs = -3: expected an integer >= 1"),
    ("train.epochs", 2.5, "train.epochs = 2.5: expected an integer >= 1"),
    ("train.batch_size", 0, "train.batch_size = 0: expected an integer >= 1"),
    ("train.lr", "fast", "train.lr = 'fast': expected a number > 0"),
    ("train.lr", float("nan"), "train.lr = nan: expected a number > 0"),
    ("model.hidden", 64, "model.hidden = 64: expected a list of integers >= 1, e.g. [64, 64]"),
    ("model.hidden", [64, 0], "model.hidden = [64, 0]: expected a list of integers >= 1"),
    ("train.stage_two_fraction", 1.5, "train.stage_two_fraction = 1.5: expected a number >= 0 and <= 1"),
    ("train.export", "final", "train.export = 'final': expected one of last, best"),
    ("train.scheduler", "step", "train.scheduler = 'step': expected one of cosine, plateau"),
    ("model.feature_scaling", "atom", "model.feature_scaling = 'atom': expected one of block, feature"),
    ("model.activation", "relu", "model.activation = 'relu': expected an activation name"),
    ("model.dtype", "float16", "model.dtype = 'float16': expected one of float64, float32"),
    ("train.device", "gpu", "train.device = 'gpu': expected cpu, cuda, cuda:N or mps"),
    ("data.val_fraction", 1, "data.val_fraction = 1: expected a number >= 0 and < 1"),
    ("data.types", {1: "Qq"}, "data.types = {1: 'Qq'}: expected a mapping of LAMMPS types"),
    ("data.format", "xyz2", "data.format = 'xyz2': unknown format 'xyz2'"),
    ("data.energy_key", 3, "data.energy_key = 3: expected null or a string"),
    ("train.seed", True, "train.seed = True: expected an integer >= 0"),
    ("out", 7, "out = 7: expected null or a string"),
])
def test_bad_values_name_key_value_and_expectation(key, value, message):
    with pytest.raises(UserError) as info:
        load_config(None, {key: value})
    assert str(info.value).startswith(message)


def test_values_are_normalised():
    config = load_config(None, {"train.lr": "1e-3", "train.epochs": 3, "data.sources": "dumps",
                                "data.types": {"1": "Cu"}, "train.energy_weight": 5})
    assert config["train"]["lr"] == 1e-3 and config["data"]["sources"] == ["dumps"]
    assert config["data"]["types"] == {1: "Cu"} and isinstance(config["train"]["energy_weight"], float)


def test_a_section_that_is_not_a_mapping_is_refused():
    with pytest.raises(UserError, match="train = 5: expected a mapping of train keys"):
        load_config(None, {"train": 5})


def test_data_label_keys_are_checked_when_present_and_tolerated_when_absent():
    config = copy.deepcopy(DEFAULTS)
    for key in ("energy_key", "forces_key", "stress_key"):
        config["data"].pop(key, None)
    assert check_config(config) == config
    config["data"]["energy_key"] = "REF_energy"
    assert check_config(config)["data"]["energy_key"] == "REF_energy"


def test_config_show_prints_every_key_with_its_meaning():
    res = CliRunner().invoke(main, ["config", "show"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for dotted, value in leaves(DEFAULTS):
        name = dotted.rpartition(".")[2]
        line = next(line for line in lines if line.strip().startswith(f"{name}:"))
        shown, meaning = (part.strip() for part in line.split("#", 1))
        assert yaml.safe_load(shown) == {name: value} and meaning == SCHEMA[dotted].meaning
    assert "train:" in lines and "  epochs: 250" in res.output
