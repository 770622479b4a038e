"""The compiled scanner's threaded path (parsers._dumpscan.parse_rows with
threads > 1) returns exactly what one thread returns: the same numbers, and
on bad input the same row, position and status; and skipped columns (kind 2)
are checked but not converted. The tables are large enough (>= 256 kB) for
the work to be split. Also take_rows, the gather behind Frame building."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from parsers._dumpscan import BAD, DONE, MORE, parse_rows, take_rows
from parsers.textio import LineReader, default_threads

N_COLS = 9


def _table(n_rows: int, seed: int = 0) -> bytes:
    """Rows like a dump's atom lines: id, type, then seven %.17g numbers (some
    lines with CRLF or extra blanks)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 10.0, size=(n_rows, N_COLS - 2)) * 10.0 ** rng.integers(-6, 3, size=(n_rows, 1))
    lines = []
    for i, row in enumerate(values):
        ending = "\r\n" if i % 97 == 5 else "  \n" if i % 89 == 3 else "\n"
        lines.append(f"{i + 1} {1 + i % 3} " + " ".join(f"{v:.17g}" for v in row) + ending)
    return "".join(lines).encode()


def _parse(text: bytes, n_rows: int, threads: int, *, pos: int = 0, end: int | None = None,
           kinds: bytes | None = None) -> tuple[tuple[int, int, int], np.ndarray]:
    out = np.full((n_rows, N_COLS), -7.0)
    result = parse_rows(text, pos, len(text) if end is None else end, out, 0, kinds, None, threads)
    return result, out


def _line_start(text: bytes, line: int) -> int:
    pos = 0
    for _ in range(line):
        pos = text.index(b"\n", pos) + 1
    return pos


def _replace_field(text: bytes, line: int, column: int, value: bytes) -> bytes:
    start = _line_start(text, line)
    stop = text.index(b"\n", start)
    words = text[start:stop].split()
    words[column] = value
    return text[:start] + b" ".join(words) + text[stop:]


@pytest.fixture(scope="module")
def table() -> bytes:
    return _table(6000)


@pytest.mark.parametrize("threads", [2, 3, 16, 1000])
def test_threads_give_the_same_numbers(table, threads):
    assert len(table) > 600_000
    want, expected = _parse(table, 6000, 1)
    assert want == (6000, len(table), DONE)
    got, out = _parse(table, 6000, threads)
    assert got == want
    assert out.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(out[:, 0], np.arange(1, 6001))


@pytest.mark.parametrize("threads", [2, 3])
def test_more_rows_than_data_and_more_data_than_rows(table, threads):
    """Range cut mid-table (MORE at the cut, rows before it written), and a
    range holding more lines than out has rows (DONE after n_rows)."""
    cut = _line_start(table, 4321)
    want, expected = _parse(table, 6000, 1, end=cut)
    assert want == (4321, cut, MORE)
    got, out = _parse(table, 6000, threads, end=cut)
    assert got == want and out.tobytes() == expected.tobytes()
    want, expected = _parse(table, 2500, 1, pos=_line_start(table, 100))
    assert want == (2500, _line_start(table, 2600), DONE)
    got, out = _parse(table, 2500, threads, pos=_line_start(table, 100))
    assert got == want and out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("bad", [b"nan", b"1.5x", b"--1"])
@pytest.mark.parametrize("line", [0, 2999, 5999])
def test_a_bad_field_in_any_piece_stops_where_one_thread_stops(table, bad, line):
    text = _replace_field(table, line, 4, bad)
    want, expected = _parse(text, 6000, 1)
    assert want == (line, _line_start(text, line), BAD)
    for threads in (2, 3, 5):
        got, out = _parse(text, 6000, threads)
        assert got == want
        assert out[:line].tobytes() == expected[:line].tobytes()


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_the_earliest_of_several_bad_lines_wins(table, threads):
    text = _replace_field(_replace_field(table, 5000, 2, b"abc"), 1800, 7, b"inf")
    text = text.replace(b"\n", b"\n\n", 1)[:-1] + b" 1\n"  # an empty line 1, too many fields last
    want, _ = _parse(text, 6001, 1)
    assert want == (1, _line_start(text, 1), BAD)
    assert _parse(text, 6001, threads)[0] == want
    later = text[_line_start(text, 2):]  # from the next line: the bad line 1800 comes first
    want, expected = _parse(later, 6000, 1)
    assert want == (1799, _line_start(later, 1799), BAD)
    got, out = _parse(later, 6000, threads)
    assert got == want and out[:1799].tobytes() == expected[:1799].tobytes()


def test_slow_conversions_in_threads(table):
    """Tokens that go through PyOS_string_to_double (more than 19 digits, out of
    the normal range), which the threads do with the GIL taken back."""
    text = table
    for line, value in [(10, b"1" * 25), (3100, b"4.9e-324"), (5990, b"0." + b"0" * 30 + b"123456789" * 3)]:
        text = _replace_field(text, line, 5, value)
    want, expected = _parse(text, 6000, 1)
    got, out = _parse(text, 6000, 3)
    assert got == want == (6000, len(text), DONE)
    assert out.tobytes() == expected.tobytes()
    assert out[10, 5] == float("1" * 25) and out[3100, 5] == 5e-324


@pytest.mark.parametrize("threads", [1, 3])
def test_skipped_columns_are_checked_not_converted(table, threads):
    kinds = bytes([0, 0, 0, 0, 0, 2, 2, 2, 0])
    (row, pos, status), out = _parse(table, 6000, threads, kinds=kinds)
    _, full = _parse(table, 6000, 1)
    assert (row, pos, status) == (6000, len(table), DONE)
    assert (out[:, 5:8] == -7.0).all()
    np.testing.assert_array_equal(out[:, [0, 1, 2, 3, 4, 8]], full[:, [0, 1, 2, 3, 4, 8]])
    overflow = _replace_field(table, 4000, 6, b"1e999")  # not converted: passes
    assert _parse(overflow, 6000, threads, kinds=kinds)[0] == (6000, len(overflow), DONE)
    for bad in (b"nan", b"-inf", b"1_0", b"1e", b"."):
        text = _replace_field(table, 4000, 6, bad)
        assert _parse(text, 6000, threads, kinds=kinds)[0] == (4000, _line_start(text, 4000), BAD)


def test_argument_checks():
    text = b"1 2\n"
    with pytest.raises(ValueError, match="threads"):
        parse_rows(text, 0, len(text), np.zeros((1, 2)), 0, None, None, 0)
    with pytest.raises(ValueError, match="kinds"):
        parse_rows(text, 0, len(text), np.zeros((1, 2)), 0, bytes([0, 3]))
    with pytest.raises(ValueError, match="kinds"):
        parse_rows(text, 0, len(text), np.zeros((1, 2)), 0, bytes([0, 1]))  # strings needs a list
    assert parse_rows(text, 0, len(text), np.zeros((1, 2)), 0, bytes([0, 2])) == (1, len(text), DONE)


def test_line_reader_threads(tmp_path, table, monkeypatch):
    """Several tables in one file, read with small chunks (pieces cut at chunk
    ends) and with threads: the same arrays and line numbers as one thread."""
    path = tmp_path / "t.txt"
    path.write_bytes(b"head\n" + table + b"mid\n" + table[: _line_start(table, 3000)] + b"1 2\n")
    results = []
    for threads, chunk in [(1, 1 << 22), (3, 1 << 22), (2, 300_000)]:
        with LineReader(path, chunk_size=chunk, threads=threads) as reader:
            assert reader.readline() == b"head"
            a = np.empty((6000, N_COLS))
            b = np.empty((3500, N_COLS))
            counts = (reader.read_table(a), reader.line, reader.readline(), reader.read_table(b), reader.line)
            results.append((counts, a.tobytes(), b[:3000].tobytes()))
    assert results[0][0] == (6000, 6001, b"mid", 3000, 9002)
    assert results[1] == results[0] and results[2] == results[0]
    monkeypatch.setenv("MLIP_PARSE_THREADS", "3")
    assert default_threads() == 3
    with LineReader(path) as reader:
        assert reader.threads == 3
    monkeypatch.setenv("MLIP_PARSE_THREADS", "0")
    with pytest.raises(ValueError, match="MLIP_PARSE_THREADS"):
        default_threads()
    monkeypatch.delenv("MLIP_PARSE_THREADS")
    assert 1 <= default_threads() <= 8


def test_concurrent_callers_and_a_forked_child(table):
    """Two Python threads parsing at once (one gets the worker threads, the
    other parses alone), and a child forked after the workers started: both
    give the one-thread result."""
    want, expected = _parse(table, 6000, 1)
    results = []

    def parse() -> None:
        for _ in range(5):
            results.append(_parse(table, 6000, 2))

    threads = [threading.Thread(target=parse) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 10
    assert all(got == want and out.tobytes() == expected.tobytes() for got, out in results)
    if not hasattr(os, "fork"):
        return
    child = os.fork()
    if child == 0:  # the child: exit status 0 when its threaded parse is right
        got, out = _parse(table, 6000, 2)
        os._exit(0 if got == want and out.tobytes() == expected.tobytes() else 1)
    assert os.waitpid(child, 0)[1] == 0


def test_take_rows():
    table = np.arange(40.0).reshape(10, 4)
    order = np.array([3, 0, 9, 9, 1])
    a, b = np.empty((5, 2)), np.empty((5, 1))
    assert take_rows(table, order, [((3, 1), a), ((0,), b)]) is None
    np.testing.assert_array_equal(a, table[order][:, [3, 1]])
    np.testing.assert_array_equal(b, table[order][:, [0]])
    c = np.empty((10, 3))
    take_rows(table, None, [((1, 2, 3), c)])
    np.testing.assert_array_equal(c, table[:, 1:])
    with pytest.raises(IndexError):
        take_rows(table, np.array([0, 10]), [((0,), np.empty((2, 1)))])
    with pytest.raises(IndexError):
        take_rows(table, None, [((4,), np.empty((10, 1)))])
    with pytest.raises(ValueError):
        take_rows(table, order, [((0, 1), np.empty((5, 1)))])
    with pytest.raises(TypeError):
        take_rows(table, order.astype(np.int32), [((0,), np.empty((5, 1)))])
