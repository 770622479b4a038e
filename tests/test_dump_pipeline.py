"""The dump reader's pipeline: frame k+1's atom block is parsed by the
scanner's worker threads (parsers._dumpscan.start_rows) while frame k is
built. Frames are the same as with one thread; errors come in file order
(frame k is yielded before frame k+1's error is raised); a caller that stops
early leaves no file open and no scan running; and the Frames' arrays, cut
from shared blocks, are independent of each other."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

import parsers
from parsers._dumpscan import DONE, parse_rows, start_rows
from parsers.lammps_dump import _FrameMemory
from parsers.textio import LineReader

N_ATOMS = 1200  # ~150 kB atom blocks: large enough to be parsed in pieces by the workers
N_FRAMES = 5
HEADER_LINES = 9  # ITEM: TIMESTEP .. ITEM: ATOMS


def _frame_lines(step: int, rng: np.random.Generator) -> list[str]:
    lines = ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(N_ATOMS), "ITEM: BOX BOUNDS pp pp pp",
             "0 20", "0 20", "0 20", "ITEM: ATOMS id type x y z fx fy fz"]
    ids = rng.permutation(N_ATOMS) + 1
    values = rng.uniform(0.0, 20.0, size=(N_ATOMS, 6))
    lines += [f"{i} 1 " + " ".join(f"{v:.17g}" for v in row) for i, row in zip(ids, values, strict=True)]
    return lines


@pytest.fixture(scope="module")
def lines() -> list[str]:
    rng = np.random.default_rng(7)
    return [line for k in range(N_FRAMES) for line in _frame_lines(100 * k, rng)]


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "p.dump"
    path.write_text("\n".join(lines) + "\n")
    return path


def _atom_line(frame: int, atom: int) -> int:
    """The 1-based line number of atom line ``atom`` (0-based) of frame ``frame``."""
    return frame * (HEADER_LINES + N_ATOMS) + HEADER_LINES + atom + 1


def _read(path: Path, threads: int, monkeypatch: pytest.MonkeyPatch) -> list[parsers.Frame]:
    monkeypatch.setenv("MLIP_PARSE_THREADS", str(threads))
    return list(parsers.read(path, types={1: "Cu"}))


def test_pipelined_frames_equal_one_thread_frames(tmp_path, lines, monkeypatch):
    path = _write(tmp_path, lines)
    one = _read(path, 1, monkeypatch)
    for threads in (2, 3):
        frames = _read(path, threads, monkeypatch)
        assert len(frames) == len(one) == N_FRAMES
        for a, b in zip(frames, one, strict=True):
            for name in ("numbers", "positions", "forces", "cell"):
                assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
            assert a.index == b.index


def test_frame_arrays_are_independent(tmp_path, lines, monkeypatch):
    """The arrays of all frames share memory blocks: writing one changes no other."""
    frames = _read(_write(tmp_path, lines), 2, monkeypatch)
    copies = [(f.positions.copy(), f.forces.copy(), f.numbers.copy()) for f in frames]
    for f in frames:
        assert f.positions.flags.c_contiguous and f.forces.flags.c_contiguous
        f.positions[:] = -1.0
        f.forces[:] = -2.0
        f.numbers[:] = -3
        assert not np.shares_memory(f.positions, f.forces)
    frames[0].positions[:] = copies[0][0]
    assert np.array_equal(frames[0].positions, copies[0][0])
    assert all((f.positions == -1.0).all() and (f.forces == -2.0).all() for f in frames[1:])


def _block(array: np.ndarray) -> np.ndarray:
    while array.base is not None:
        array = array.base
    return array


def test_frame_memory_blocks_grow_with_use():
    """Small arrays are arrays of their own; small files get small blocks (a
    kept frame keeps its whole block), large ones blocks of block_bytes;
    arrays are aligned and do not overlap."""
    memory = _FrameMemory(block_bytes=1 << 20)
    small = memory.array((10, 3))
    assert _block(small).nbytes == 240
    first = memory.array((1000, 3))
    assert _block(first).nbytes == 24000
    arrays = [small, first, *(memory.array((1000, 3)) for _ in range(100)), memory.array((3000,), np.int64)]
    sizes = sorted({_block(a).nbytes for a in arrays})
    assert sizes[-1] == 1 << 20 and len(sizes) > 3
    assert all((a.ctypes.data - _block(a).ctypes.data) % 64 == 0 for a in arrays)
    assert arrays[-1].dtype == np.int64 and arrays[-1].shape == (3000,)
    for a, b in itertools.pairwise(arrays):
        assert not np.shares_memory(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_bad_atom_line_in_the_next_frame_comes_after_this_frame(tmp_path, lines, monkeypatch, threads):
    bad = list(lines)
    bad[_atom_line(2, 700) - 1] += " 1.0"  # frame 2: one field too many
    monkeypatch.setenv("MLIP_PARSE_THREADS", str(threads))
    frames = parsers.read(_write(tmp_path, bad), types={1: "Cu"})
    assert [next(frames).index for _ in range(2)] == [0, 1]
    with pytest.raises(parsers.ParseError) as info:
        next(frames)
    assert info.value.line == _atom_line(2, 700)
    assert info.value.expected.startswith("8 fields") and info.value.found == "9 fields"


@pytest.mark.parametrize("threads", [1, 2])
def test_bad_header_in_the_next_frame_comes_after_this_frame(tmp_path, lines, monkeypatch, threads):
    bad = list(lines)
    box_line = _atom_line(1, 0) + N_ATOMS + 5  # frame 2's first box row
    bad[box_line - 1] = "0 abc"
    monkeypatch.setenv("MLIP_PARSE_THREADS", str(threads))
    frames = parsers.read(_write(tmp_path, bad), types={1: "Cu"})
    assert [next(frames).index for _ in range(2)] == [0, 1]
    with pytest.raises(parsers.ParseError) as info:
        next(frames)
    assert info.value.line == box_line and info.value.expected == "box bounds numbers"


@pytest.mark.parametrize("threads", [1, 2])
def test_error_building_a_frame_while_the_next_is_parsed(tmp_path, lines, monkeypatch, threads):
    """A duplicate id in frame 1 (found while frame 2 is being parsed) and a
    bad number in frame 2: frame 1's error is the one raised."""
    bad = list(lines)
    first = _atom_line(1, 0)
    bad[first] = bad[first - 1].split()[0] + " " + bad[first].split(" ", 1)[1]  # atom 1 takes atom 0's id
    bad[_atom_line(2, 5) - 1] = "x"
    monkeypatch.setenv("MLIP_PARSE_THREADS", str(threads))
    frames = parsers.read(_write(tmp_path, bad), types={1: "Cu"})
    assert next(frames).index == 0
    with pytest.raises(parsers.ParseError) as info:
        next(frames)
    assert info.value.expected == "unique atom ids" and info.value.line in (first, first + 1)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc (Linux)")
def test_stopping_early_leaks_no_file_and_no_thread(tmp_path, lines, monkeypatch):
    path = _write(tmp_path, lines)
    monkeypatch.setenv("MLIP_PARSE_THREADS", "2")
    list(parsers.read(path, types={1: "Cu"}))  # the scanner's worker is started once and kept
    fds, threads = _open_fds(), _os_threads()
    for stop in range(N_FRAMES):
        for frame in parsers.read(path, types={1: "Cu"}):
            if frame.index == stop:
                break
        assert _open_fds() == fds
        assert _os_threads() == threads
    frames = parsers.read(path, types={1: "Cu"})
    next(frames)
    frames.close()
    assert _open_fds() == fds and _os_threads() == threads
    # the worker is free again: the next read gives the same frames
    again = _read(path, 2, monkeypatch)
    assert again[-1].positions.tobytes() == _read(path, 1, monkeypatch)[-1].positions.tobytes()


def test_start_rows_finish_and_drop(lines):
    text = ("\n".join(line for line in lines[HEADER_LINES : HEADER_LINES + N_ATOMS]) + "\n").encode()
    want = np.empty((N_ATOMS, 8))
    assert parse_rows(text, 0, len(text), want, 0, None, None, 1) == (N_ATOMS, len(text), DONE)
    out = np.empty((N_ATOMS, 8))
    scan = start_rows(text, 0, len(text), out, 0, None, None, 2)
    assert scan.finish() == (N_ATOMS, len(text), DONE)
    assert out.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="finish"):
        scan.finish()
    buf = bytearray(text)
    dropped = start_rows(buf, 0, len(buf), np.empty((N_ATOMS, 8)), 0, None, None, 2)
    with pytest.raises(BufferError):  # held until finished
        buf.extend(b"1")
    del dropped  # waits for its workers
    buf.extend(b"1")


def test_reader_refuses_to_move_under_a_pending_table(tmp_path, lines):
    path = _write(tmp_path, lines)
    with LineReader(path, chunk_size=1 << 16, threads=2) as reader:
        for _ in range(HEADER_LINES):
            reader.readline()
        out = np.empty((N_ATOMS, 8))
        reader.start_table(out)
        with pytest.raises(RuntimeError, match="wait_table"):
            reader.readline()
        with pytest.raises(RuntimeError, match="wait_table"):
            reader.read_table(np.empty((1, 8)))
        assert reader.wait_table() == N_ATOMS
        with pytest.raises(RuntimeError, match="no table"):
            reader.wait_table()
        assert reader.line == HEADER_LINES + N_ATOMS
        assert reader.readline() == b"ITEM: TIMESTEP"
