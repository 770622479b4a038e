"""Frame building from the scanned atom table: parsers._dumpscan.id_order (the
one-pass sort for ids 1..n) and the reader's fall-back to a general sort for
other ids (gaps, large or non-integer ids), which must give the same Frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import parsers
from parsers._dumpscan import id_order


def _table(ids: list[float]) -> np.ndarray:
    table = np.zeros((len(ids), 3))
    table[:, 1] = ids
    return table


@pytest.mark.parametrize("ids", [[1], [3, 1, 2], [1, 2, 3, 4], [4, 2, 5, 1, 3]])
def test_id_order_of_a_permutation(ids):
    order = np.full(len(ids), 99, dtype=np.int64)
    assert id_order(_table(ids), 1, order) is True
    np.testing.assert_array_equal(order, np.argsort(ids))


@pytest.mark.parametrize("ids", [[1, 1, 2], [0, 1, 2], [1, 2, 4], [2, 3, 4], [1, 2.5, 3], [-1, 1, 2],
                                 [1, 2, 1e300]])
def test_id_order_refuses_other_ids(ids):
    assert id_order(_table(ids), 1, np.empty(len(ids), dtype=np.int64)) is False


def test_id_order_of_no_rows_and_argument_checks():
    assert id_order(np.zeros((0, 2)), 0, np.empty(0, dtype=np.int64)) is True
    with pytest.raises(IndexError):
        id_order(_table([1]), 3, np.empty(1, dtype=np.int64))
    with pytest.raises(TypeError):
        id_order(_table([1, 2]), 1, np.empty(3, dtype=np.int64))
    with pytest.raises(TypeError):
        id_order(_table([1, 2]), 1, np.empty(2))


def _write_dump(path: Path, ids: list[str]) -> Path:
    """One frame whose atom i sits at x = i and feels fx = -i (i: the atom's rank by id)."""
    rank = {word: i for i, word in enumerate(sorted(ids, key=float))}
    lines = ["ITEM: TIMESTEP", "0", "ITEM: NUMBER OF ATOMS", str(len(ids)), "ITEM: BOX BOUNDS pp pp pp",
             "0 10", "0 10", "0 10", "ITEM: ATOMS id type x y z fx fy fz"]
    lines += [f"{word} 1 {rank[word]} 0.5 0.25 {-rank[word]} 0 0" for word in ids]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("ids", [["3", "1", "2", "4"], ["30", "10", "20"], ["7", "1", "1000000"],
                                 ["2", "3", "4"], ["4", "2.0", "3e0", "1"]])
def test_frames_sorted_by_id_whatever_the_ids(tmp_path, ids):
    (frame,) = parsers.read(_write_dump(tmp_path / "d.dump", ids), types={1: "Cu"})
    n = len(ids)
    np.testing.assert_array_equal(frame.positions, np.column_stack([np.arange(n), [0.5] * n, [0.25] * n]))
    np.testing.assert_array_equal(frame.forces[:, 0], -np.arange(n))
    np.testing.assert_array_equal(frame.numbers, [29] * n)
