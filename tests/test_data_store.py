"""The HDF5 dataset store: exact round trip, layout, atomic writes, indexing,
splits and lazy, fork-safe reading (mlip.data)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle

import h5py
import numpy as np
import pytest

import mlip.data.dataset as dataset_module
import mlip.data.store as store_module
from mlip.data import Dataset, Subset, write_dataset
from mlip.errors import UserError
from parsers.frame import Frame

FIELDS = (
    "numbers positions cell pbc energy forces stress charges total_charge "
    "energy_weight force_weight source index group"
).split()


def assert_same_frame(a: Frame, b: Frame) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray) and x.dtype == y.dtype, name
            assert np.array_equal(x, y), name
        else:
            assert type(x) is type(y) and x == y, (name, x, y)


def make_frames(rng: np.random.Generator, sources: list[str], per_source: int = 4) -> list[Frame]:
    """Frames with every combination of optional fields, several elements and
    triclinic cells, from several sources."""
    frames = []
    for s, source in enumerate(sources):
        for k in range(per_source):
            i = len(frames)
            n = int(rng.integers(1, 9))
            cell = np.diag(rng.uniform(4, 9, 3)) + np.triu(rng.uniform(-1, 1, (3, 3)), 1)
            frames.append(
                Frame(
                    numbers=rng.choice([1, 8, 29, 39], n),
                    positions=rng.normal(size=(n, 3)) * 3,
                    cell=cell,
                    pbc=[True, i % 3 != 0, True],
                    energy=None if i % 5 == 4 else float(rng.normal() * 100),
                    forces=rng.normal(size=(n, 3)) if i % 2 == 0 else None,
                    stress=rng.normal(size=(3, 3)) if i % 3 == 1 else None,
                    charges=rng.normal(size=n) if i % 4 == 1 else None,
                    total_charge=float(i % 3 - 1),
                    energy_weight=float(rng.uniform(0, 2)),
                    force_weight=float(rng.uniform(0, 2)),
                    source=source,
                    index=k + 10 * s,
                    group=None if i % 2 else f"family-{i % 3}",
                )
            )
    return frames


@pytest.fixture
def sources(tmp_path):
    """Two real files standing in for source dumps (their bytes are hashed)."""
    paths = []
    for name in ("a.dump", "b.dump"):
        p = tmp_path / name
        p.write_bytes(os.urandom(1000))
        paths.append(str(p))
    return paths


def test_round_trip_is_exact(tmp_path, sources):
    frames = make_frames(np.random.default_rng(1), sources + ["in-memory"], per_source=5)
    path = tmp_path / "data.h5"
    assert write_dataset(iter(frames), path) == len(frames)
    ds = Dataset(path)
    assert len(ds) == len(frames)
    for a, b in zip(frames, ds, strict=True):
        assert_same_frame(a, b)
    for i in (0, 7, len(frames) - 1):
        assert_same_frame(frames[i], ds[i])
    assert ds.elements == ["H", "O", "Cu", "Y"]
    assert ds.units == "metal"
    assert ds.total_atoms == sum(len(f) for f in frames)
    assert ds.n_atoms.tolist() == [len(f) for f in frames]
    assert ds.sources == sources + ["in-memory"]


def test_round_trip_in_small_blocks(tmp_path, sources, monkeypatch):
    """Writer flushes and reader iteration blocks at many boundaries, with
    forces and charges present on alternating runs of frames."""
    monkeypatch.setattr(store_module, "_BLOCK_ROWS", 5)
    monkeypatch.setattr(dataset_module, "_ITER_BLOCK_ATOMS", 7)
    frames = make_frames(np.random.default_rng(2), sources, per_source=25)
    write_dataset(frames, tmp_path / "d.h5")
    ds = Dataset(tmp_path / "d.h5")
    got = list(ds)
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        assert_same_frame(a, b)


def test_file_layout(tmp_path, sources):
    frames = make_frames(np.random.default_rng(3), sources, per_source=3)
    write_dataset(frames, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "r") as h5:
        assert h5.attrs["format"] == "mlip-dataset"
        assert h5.attrs["format_version"] == 1
        assert h5.attrs["units"] == "metal"
        assert list(h5.attrs["elements"]) == ["H", "O", "Cu", "Y"]
        offsets = h5["frames/offsets"][()]
        assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(f) for f in frames])]).tolist()
        pos = h5["atoms/positions"]
        assert pos.dtype == np.float64 and pos.shape == (offsets[-1], 3)
        np.testing.assert_array_equal(pos[offsets[2] : offsets[3]], frames[2].positions)
        forces = h5["atoms/forces"][()]
        for i, f in enumerate(frames):
            block = forces[offsets[i] : offsets[i + 1]]
            assert h5["frames/has_forces"][i] == (f.forces is not None)
            assert np.isnan(block).all() if f.forces is None else np.array_equal(block, f.forces)
            assert np.isnan(h5["frames/energy"][i]) == (f.energy is None)
        shas = list(h5["sources/sha256"].asstr()[()])
        assert shas == [hashlib.sha256(open(s, "rb").read()).hexdigest() for s in sources]
        assert list(h5["frames/source"][()]) == [0, 0, 0, 1, 1, 1]


def test_absent_properties_are_not_stored(tmp_path):
    frames = [Frame(numbers=[29, 29], positions=np.eye(2, 3), energy=-1.0) for _ in range(3)]
    write_dataset(frames, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5", "r") as h5:
        assert "forces" not in h5["atoms"] and "charges" not in h5["atoms"]
        assert list(h5["sources/sha256"].asstr()[()]) == [""]
    ds = Dataset(tmp_path / "d.h5")
    assert ds[1].forces is None and ds[1].charges is None and ds[1].energy == -1.0


def test_interrupted_write_leaves_nothing(tmp_path, sources):
    frames = make_frames(np.random.default_rng(4), sources)
    out = tmp_path / "data.h5"

    def failing():
        yield from frames[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(failing(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dump", "b.dump"]

    write_dataset(frames, out)  # an existing file survives a failed rebuild unchanged
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_dataset(failing(), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dump", "b.dump", "data.h5"]


def test_no_frames_and_bad_numbers(tmp_path):
    with pytest.raises(UserError, match="no frames"):
        write_dataset([], tmp_path / "d.h5")
    with pytest.raises(UserError, match="atomic number 0"):
        write_dataset([Frame(numbers=[0], positions=[[0, 0, 0]], source="x.xyz")], tmp_path / "d.h5")
    assert list(tmp_path.iterdir()) == []


def test_indexing(tmp_path, sources):
    frames = make_frames(np.random.default_rng(5), sources, per_source=6)
    write_dataset(frames, tmp_path / "d.h5")
    ds = Dataset(tmp_path / "d.h5")
    n = len(frames)
    assert_same_frame(ds[-1], frames[-1])
    assert_same_frame(ds[np.int64(3)], frames[3])
    mask = np.zeros(n, dtype=bool)
    mask[[1, 8]] = True
    cases = [
        (slice(2, 7), frames[2:7]),
        (slice(None, None, 3), frames[::3]),
        (slice(9, 2, -2), frames[9:2:-2]),
        (slice(5, 5), []),
        ([4, 0, 4], [frames[4], frames[0], frames[4]]),
        (np.array([11, 1]), [frames[11], frames[1]]),
        (mask, [frames[1], frames[8]]),
    ]
    for index, expected in cases:
        got = ds[index]
        assert len(got) == len(expected)
        for a, b in zip(expected, got, strict=True):
            assert_same_frame(a, b)
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            ds[bad]
    with pytest.raises(IndexError):
        ds[np.zeros(3, dtype=bool)]
    sub = ds.subset([5, 2, 9])
    assert isinstance(sub, Subset) and len(sub) == 3 and sub.elements == ds.elements
    assert_same_frame(sub[1], frames[2])
    assert [f.index for f in sub] == [frames[i].index for i in (5, 2, 9)]
    assert [f.index for f in sub[1:]] == [frames[2].index, frames[9].index]


def test_random_split(tmp_path, sources):
    write_dataset(make_frames(np.random.default_rng(6), sources, per_source=20), tmp_path / "d.h5")
    ds = Dataset(tmp_path / "d.h5")
    train, val = ds.split(val_fraction=0.25, seed=3)
    assert len(val) == 10 and len(train) == 30
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(40))
    assert train.dtype == np.int64 and np.all(np.diff(val) > 0)
    again = Dataset(tmp_path / "d.h5").split(val_fraction=0.25, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(ds.split(val_fraction=0.25, seed=4)[1], val)
    assert len(ds.split(val_fraction=0.001)[1]) == 1  # never an empty validation set
    t0, v0 = ds.split(val_fraction=0.0)
    assert len(t0) == 40 and len(v0) == 0
    bad_args = (
        {"val_fraction": 1.0},
        {"val_fraction": -0.1},
        {"split_by": "family"},
        {"val_fraction": 0, "split_by": "x"},
    )
    for bad in bad_args:
        with pytest.raises(UserError):
            ds.split(**bad)


def test_source_split_holds_out_whole_files(tmp_path):
    # five "files" with 3, 5, 8, 13 and 21 frames
    sizes = {f"fam{k}.dump": s for k, s in enumerate([3, 5, 8, 13, 21])}
    frames = [
        Frame(numbers=[29], positions=[[0.0, 0.0, i]], energy=float(i), source=src, index=i)
        for src, size in sizes.items()
        for i in range(size)
    ]
    write_dataset(frames, tmp_path / "d.h5")
    ds = Dataset(tmp_path / "d.h5")
    seen = set()
    for seed in range(8):
        train, val = ds.split(val_fraction=0.2, seed=seed, split_by="source")
        train_src = {ds.sources[s] for s in ds.source_id[train]}
        val_src = {ds.sources[s] for s in ds.source_id[val]}
        assert train_src and val_src and not train_src & val_src
        assert len(train) + len(val) == 50
        # every held-out file is held out whole
        assert len(val) == sum(sizes[s] for s in val_src)
        assert abs(len(val) - 10) <= 3  # as close to 20 % as whole files allow
        seen.add(frozenset(val_src))
        again = ds.split(val_fraction=0.2, seed=seed, split_by="source")
        assert np.array_equal(again[1], val)
    assert len(seen) > 1  # the seed changes which families are held out
    single = tmp_path / "one.h5"
    write_dataset(frames[:3], single)
    with pytest.raises(UserError, match="at least 2 source files"):
        Dataset(single).split(split_by="source")


def _open_fds_to(path) -> int:
    target = os.path.realpath(path)
    fd_dir = "/proc/self/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.path.realpath(os.readlink(os.path.join(fd_dir, fd))) == target
        except OSError:
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_lazy_open_and_close(tmp_path, sources):
    path = tmp_path / "d.h5"
    write_dataset(make_frames(np.random.default_rng(7), sources), path)
    ds = Dataset(path)
    assert _open_fds_to(path) == 0  # only the per-frame table was read
    ds[0]
    assert _open_fds_to(path) == 1
    ds.close()
    assert _open_fds_to(path) == 0
    with Dataset(path) as ds2:
        list(ds2)
    assert _open_fds_to(path) == 0


def test_replaced_file_is_detected(tmp_path, sources):
    path = tmp_path / "d.h5"
    write_dataset(make_frames(np.random.default_rng(10), sources), path)
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not the private mode of the temporary file
    opened, unopened = Dataset(path), Dataset(path)
    opened[0]
    write_dataset(make_frames(np.random.default_rng(11), sources), path)  # a rebuild
    opened[1]  # the open handle still reads the old file, consistent with its table
    with pytest.raises(UserError, match="changed on disk"):
        unopened[0]  # its table belongs to the old file: refuse to mix
    assert len(Dataset(path)[0]) > 0


def _energies_in_child(args):
    ds, indices = args
    return [ds[i].energy for i in indices], [float(ds[i].positions.sum()) for i in indices]


def test_fork_and_pickle(tmp_path, sources):
    path = tmp_path / "d.h5"
    frames = make_frames(np.random.default_rng(8), sources, per_source=10)
    write_dataset(frames, path)
    ds = Dataset(path)
    ds[3]  # the parent holds an open handle before forking
    chunks = [list(range(k, len(frames), 4)) for k in range(4)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_energies_in_child, [(ds, c) for c in chunks])
    for chunk, (energies, sums) in zip(chunks, results, strict=True):
        assert energies == [frames[i].energy for i in chunk]
        assert sums == [float(frames[i].positions.sum()) for i in chunk]
    # the parent's handle still works after the children used theirs
    assert_same_frame(ds[5], frames[5])
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._h5 is None
    assert_same_frame(clone[7], frames[7])


def test_torch_dataloader_workers(tmp_path, sources):
    torch = pytest.importorskip("torch")
    path = tmp_path / "d.h5"
    frames = make_frames(np.random.default_rng(9), sources, per_source=8)
    write_dataset(frames, path)
    ds = Dataset(path)
    ds[0]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, collate_fn=list, multiprocessing_context="fork"
    )
    got = [f for batch in loader for f in batch]
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        assert_same_frame(a, b)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Dataset(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5\n")
    with pytest.raises(UserError, match="not an HDF5 file"):
        Dataset(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1, 2]
    with pytest.raises(UserError, match="not an mlip dataset"):
        Dataset(tmp_path / "other.h5")
    write_dataset([Frame(numbers=[1], positions=[[0, 0, 0]])], tmp_path / "new.h5")
    with h5py.File(tmp_path / "new.h5", "a") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(UserError, match="newer"):
        Dataset(tmp_path / "new.h5")
