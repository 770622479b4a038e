"""Validation splits of :meth:`mlip.data.Dataset.split`: stratified by group, leave one family
out (``holdout``), the config keys that select them, and the mlearn benchmark's split, which must
keep every ``test.json`` structure out of training and validation."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlip.data import Dataset, write_dataset
from mlip.errors import UserError
from mlip.train.config import load_config
from parsers import Frame, read

ROOT = Path(__file__).resolve().parent.parent
MLEARN = ROOT.parent / "shared" / "data" / "mlearn"

# frames per (source file, group); None = no group label
LAYOUT = {("a.dump", "AIMD"): 40, ("a.dump", "Elastic"): 20, ("b.dump", "Surface"): 10,
          ("b.dump", "Vacancy"): 1, ("c.dump", None): 5}


@pytest.fixture()
def dataset(tmp_path) -> Dataset:
    """76 one-atom frames in three source files and four groups (five frames unlabelled)."""
    frames = [Frame(numbers=[29], positions=[[0.0, 0.0, float(i)]], energy=float(i), source=source,
                    index=i, group=group)
              for (source, group), size in LAYOUT.items() for i in range(size)]
    write_dataset(frames, tmp_path / "d.h5")
    return Dataset(tmp_path / "d.h5")


def labels(ds: Dataset, indices: np.ndarray) -> Counter:
    """Frames per group label (None for unlabelled) among ``indices``."""
    return Counter(ds.groups[g] if g >= 0 else None for g in ds.group_id[indices])


def assert_partition(ds: Dataset, train: np.ndarray, val: np.ndarray) -> None:
    """Every frame in exactly one of the two sorted index arrays."""
    assert not np.intersect1d(train, val).size
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(ds)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_group_split_keeps_each_groups_proportion(dataset):
    train, val = dataset.split(0.1, seed=0, split_by="group")
    assert_partition(dataset, train, val)
    # round(0.1 n) of each group, never a group's only frame; unlabelled frames are one more group
    assert labels(dataset, val) == {"AIMD": 4, "Elastic": 2, "Surface": 1}
    assert labels(dataset, train)["Vacancy"] == 1 and labels(dataset, train)[None] == 5
    half = labels(dataset, dataset.split(0.3, seed=0, split_by="group")[1])
    assert half == {"AIMD": 12, "Elastic": 6, "Surface": 3, None: 2}


def test_group_split_is_determined_by_the_seed(dataset):
    first = dataset.split(0.2, seed=5, split_by="group")
    again = Dataset(dataset.path).split(0.2, seed=5, split_by="group")
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    others = {tuple(dataset.split(0.2, seed=s, split_by="group")[1]) for s in range(6)}
    assert len(others) > 1  # the seed changes which frames of each group are held out


def test_group_split_needs_group_labels(tmp_path):
    write_dataset([Frame(numbers=[29], positions=[[0.0, 0.0, float(i)]], energy=0.0, index=i)
                   for i in range(4)], tmp_path / "plain.h5")
    with pytest.raises(UserError, match="needs group labels"):
        Dataset(tmp_path / "plain.h5").split(0.25, split_by="group")


@pytest.mark.parametrize("split_by", ["random", "group", "source"])
def test_holdout_group_is_all_in_validation(dataset, split_by):
    surface = dataset.family("Surface")
    assert len(surface) == 10
    for seed in range(3):
        train, val = dataset.split(0.1, seed=seed, split_by=split_by, holdout="Surface")
        assert_partition(dataset, train, val)
        assert np.isin(surface, val).all() and "Surface" not in labels(dataset, train)
        assert len(val) > len(surface)  # plus the in-family validation frames of the rest
        again = dataset.split(0.1, seed=seed, split_by=split_by, holdout="Surface")
        assert np.array_equal(again[1], val)
    # no in-family validation: validation is the held-out family alone
    train, val = dataset.split(0.0, split_by=split_by, holdout="Surface")
    assert np.array_equal(val, surface) and len(train) == len(dataset) - 10


def test_holdout_source_by_path_name_or_stem(dataset):
    b = dataset.family("b.dump")
    assert len(b) == 11 and set(dataset.source_id[b]) == {dataset.sources.index("b.dump")}
    assert np.array_equal(dataset.family("b"), b)
    train, val = dataset.split(0.1, seed=1, holdout="b")
    assert_partition(dataset, train, val)
    assert np.isin(b, val).all() and not np.isin(b, train).any()
    # in-family validation: round(0.1 * 65) random frames of the 65 others
    assert len(val) == 11 + 6


def test_unknown_or_whole_holdout_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(UserError, match=r"no group or source file named 'Liquid'.*AIMD.*a\.dump"):
        dataset.split(0.1, holdout="Liquid")
    write_dataset([Frame(numbers=[29], positions=[[0.0, 0.0, float(i)]], energy=0.0, source="x.dump",
                         index=i) for i in range(3)], tmp_path / "one.h5")
    with pytest.raises(UserError, match="leaves no frames to train on"):
        Dataset(tmp_path / "one.h5").split(0.1, holdout="x")


def test_config_keys_select_the_split():
    config = load_config(None, {"data.split_by": "group", "data.holdout": "Surface"})
    assert config["data"]["split_by"] == "group" and config["data"]["holdout"] == "Surface"
    assert load_config()["data"]["holdout"] is None
    with pytest.raises(UserError, match="split_by"):
        load_config(None, {"data.split_by": "family"})


def structure_key(frame: Frame) -> tuple:
    """A structure's identity: species, cell and positions (rounded against float noise)."""
    return (tuple(frame.numbers), tuple(np.round(np.asarray(frame.cell), 4).ravel()),
            tuple(np.round(np.asarray(frame.positions), 3).ravel()))


@pytest.mark.skipif(not MLEARN.is_dir(), reason="needs ../shared/data/mlearn")
@pytest.mark.parametrize("element", ["Cu", "Li", "Mo", "Si"])
def test_mlearn_benchmark_split_never_sees_a_test_structure(element, tmp_path):
    from mlip.train.data import open_dataset

    spec = importlib.util.spec_from_file_location("mlearn_benchmark", ROOT / "benchmarks" / "mlearn.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    test_keys = {structure_key(f) for f in read(MLEARN / element / "test.json")}
    for holdout in (None, "Surface"):
        config = bench.train_config(element, tmp_path / str(holdout), seed=1, threads=1, holdout=holdout)
        ds = open_dataset(config["data"], tmp_path / str(holdout))
        dc = config["data"]
        train, val = ds.split(dc["val_fraction"], config["train"]["seed"], dc["split_by"], dc["holdout"])
        assert len(train) + len(val) == len(ds) == len(list(read(MLEARN / element / "training.json")))
        seen = {structure_key(ds[int(i)]) for i in np.concatenate([train, val])}
        assert len(test_keys) == len(list(read(MLEARN / element / "test.json")))
        assert not seen & test_keys
        if holdout is None:  # stratified: each group's share of validation is its share of the data
            for group, count in labels(ds, np.arange(len(ds))).items():
                assert labels(ds, val)[group] == min(round(0.1 * count), count - 1)
