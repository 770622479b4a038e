"""Outputs that cannot be written (a full disk, a read-only disk) and two writers of one output:
one line naming the path, exit code 2, nothing partial left behind (mlip.fileio).

The disks are small tmpfs mounts, so these tests need root and permission to mount; they are
skipped elsewhere. A read-only mount, unlike a chmod'ed folder, stops root too.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from mlip.data import Dataset
from mlip.errors import UserError
from mlip.fileio import atomic_write, atomic_write_text, output_lock
from mlip.train.checkpoint import save_atomic

ENV = {**os.environ, "MLIP_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
NO_SPACE = "No space left on device"
READ_ONLY = "Read-only file system"


def mlip(*args: str | Path) -> subprocess.CompletedProcess:
    """Run the ``mlip`` command in a fresh process (a crash at exit shows as its exit code)."""
    return subprocess.run([sys.executable, "-m", "mlip", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr == f"mlip: error: {message}\n"


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` at ``where`` for the test; skip where mounting is not allowed."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small or read-only disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB disk (a dataset file takes 1.2 MB at least: HDF5 allocates whole chunks)."""
    with tmpfs(tmp_path / "small", "size=2m") as disk:
        yield disk


@pytest.fixture
def read_only(tmp_path) -> Iterator[Path]:
    """A read-only disk."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        yield disk


def write_extxyz(path: Path, n_frames: int) -> Path:
    """``n_frames`` rattled 32-atom Cu cells with made-up energies and forces."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=rng.normal(), forces=rng.normal(size=(32, 3)))
        images.append(atoms)
    write(path, images)
    return path


@pytest.fixture(scope="module")
def frames_400(tmp_path_factory) -> Path:
    return write_extxyz(tmp_path_factory.mktemp("xyz") / "cu400.xyz", 400)


@pytest.fixture(scope="module")
def frames_3000(tmp_path_factory) -> Path:
    return write_extxyz(tmp_path_factory.mktemp("xyz") / "cu3000.xyz", 3000)


# -- a full disk ---------------------------------------------------------------
def test_data_build_to_a_full_disk_is_one_line_and_keeps_the_old_file(frames_3000, full_disk, tmp_path):
    """HDF5 crashed the process (segfault at exit) after failing to write to a full disk."""
    out = full_disk / "data.h5"
    small = write_extxyz(tmp_path / "small.xyz", 2)
    assert mlip("data", "build", small, "-o", out).returncode == 0
    before = out.read_bytes()
    for _ in range(2):  # the crash was at exit, every time
        proc = mlip("data", "build", frames_3000, "-o", out)
        assert_one_line_error(proc, f"cannot write {out}: {NO_SPACE}")
        assert [p.name for p in full_disk.iterdir()] == ["data.h5"] and out.read_bytes() == before


def test_plot_to_a_full_disk_leaves_no_partial_png(full_disk, tmp_path):
    """Parity and learning-curve PNGs go through atomic_write: a full disk is one UserError and no
    file; with room the PNG is whole."""
    from mlip.plots import parity

    ref = np.linspace(-1.0, 1.0, 400_000)
    filler = full_disk / "filler"
    with filler.open("wb") as fh:  # fill the disk but for a few kB
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    filler.write_bytes(b"\0" * (filler.stat().st_size - 4096))
    path = full_disk / "parity_forces.png"
    with pytest.raises(UserError, match=f"^cannot write {path}: {NO_SPACE}$"):
        parity(ref, ref + 0.01, "force (eV/Å)", path, split="validation")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]
    parity(ref[:100], ref[:100], "force (eV/Å)", tmp_path / "ok.png", split="validation")
    assert (tmp_path / "ok.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_to_a_full_disk_leaves_no_temporary_file(full_disk):
    """``mlip train``'s checkpoints: torch.save's failure used to leave a partial temporary file."""
    path = full_disk / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match=f"^cannot write {path}: {NO_SPACE}$"):
        save_atomic({"weights": torch.zeros(1_000_000)}, path)
    assert list(path.parent.iterdir()) == []


def train(data: Path, out: Path) -> subprocess.CompletedProcess:
    """One epoch of a tiny model."""
    return mlip("train", data, "--epochs", 1, "--out", out, "--set", "model.hidden=[8]", "--batch-size", 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(frames, run directory of a finished training on them)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_extxyz(root / "cu.xyz", 12)
    assert train(data, root / "run").returncode == 0
    return data, root / "run"


def test_train_to_a_full_disk_is_one_line_and_leaves_no_temporary_file(trained, tmp_path):
    """The disk holds the run's dataset and config but not its first checkpoint."""
    data, reference = trained
    page = 4096
    room = sum(-(-(reference / name).stat().st_size // page) * page
               for name in ("data.h5", "config.yaml", "metrics.csv"))
    assert (reference / "checkpoints" / "last.pt").stat().st_size > 4 * page
    with tmpfs(tmp_path / "small", f"size={room + 2 * page}") as disk:
        proc = train(data, disk / "run")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
        assert proc.stderr.startswith(f"mlip: error: cannot write {disk / 'run' / 'checkpoints'}/")
        assert proc.stderr.endswith(f".pt: {NO_SPACE}\n")
        assert not [p for p in disk.rglob("*") if ".tmp" in p.name]


# -- a read-only disk ------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.h5", "new/data.h5"])
def test_data_build_to_a_read_only_disk_is_one_line(name, frames_400, read_only):
    out = read_only / name
    assert_one_line_error(mlip("data", "build", frames_400, "-o", out), f"cannot write {out}: {READ_ONLY}")


def test_train_export_evaluate_to_a_read_only_disk_are_one_line(trained, read_only):
    data, run = trained
    out = read_only / "m.pt"
    assert_one_line_error(mlip("export", run, "-o", out), f"cannot write {out}: {READ_ONLY}")
    out = read_only / "e.csv"
    assert_one_line_error(mlip("evaluate", run, data, "--csv", out), f"cannot write {out}: {READ_ONLY}")
    out = read_only / "run"  # the message names the run directory, not its hidden set-up folder
    assert_one_line_error(train(data, out), f"cannot write {out}: {READ_ONLY}")


# -- two writers ----------------------------------------------------------------
def _stop_while_locked(proc: subprocess.Popen, lock: Path) -> None:
    """SIGSTOP ``proc`` at a moment it holds the flock on ``lock``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            time.sleep(0.001)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)  # not taken yet
        except BlockingIOError:
            proc.send_signal(signal.SIGSTOP)
            return
        finally:
            os.close(fd)
        time.sleep(0.001)
    pytest.fail(f"the first build never held {lock}: {proc.communicate()}")


def test_second_data_build_to_one_output_fails_while_the_first_runs(frames_3000, frames_400, tmp_path):
    """Both builds used to report success (with different frame counts)."""
    out = tmp_path / "data.h5"
    command = [sys.executable, "-m", "mlip", "data", "build", str(frames_3000), "-o", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        _stop_while_locked(first, tmp_path / "data.h5.lock")
        second = mlip("data", "build", frames_400, "-o", out)
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert_one_line_error(second, f"{out} is being written by another process")
    assert first.returncode == 0, stderr
    assert f"wrote {out}: 3000 frames," in stdout
    assert len(Dataset(out)) == 3000
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]  # the lock file is gone too


def test_output_lock_in_process(tmp_path):
    out = tmp_path / "a" / "out.h5"
    with output_lock(out):
        with pytest.raises(UserError, match="is being written by another process"), output_lock(out):
            pass
    with output_lock(out):  # released, and taken again
        pass
    assert list(out.parent.iterdir()) == []


# -- atomic_write itself ---------------------------------------------------------
def test_atomic_write_all_or_nothing(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write_text(path, "old")
    assert path.read_text() == "old" and path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    for exc in (KeyboardInterrupt, ValueError):  # not write failures: they pass unchanged
        with pytest.raises(exc), atomic_write(path) as out:
            out.write(b"new, partial")
            raise exc
        assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_deferred_errors_keep_the_writer_consistent(full_disk):
    """With ``defer_errors`` a failed write is kept in memory: reads see it, the writer never fails,
    and the error is raised at the end."""
    path = full_disk / "big.bin"
    blob = np.arange(400_000, dtype=np.int64).tobytes()  # 3.2 MB > 2 MiB
    with pytest.raises(UserError, match=f"^cannot write {path}: {NO_SPACE}$"), \
            atomic_write(path, defer_errors=True) as out:
        assert out.write(blob) == len(blob) and out.error is not None
        out.write(b"tail")
        out.seek(len(blob) - 8)
        assert out.read(100) == blob[-8:] + b"tail"
        out.seek(0)
        buffer = bytearray(len(blob))
        assert out.readinto(buffer) == len(blob) and buffer == blob
    assert list(full_disk.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
