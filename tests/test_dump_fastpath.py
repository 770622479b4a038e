"""The compiled table scanner behind the LAMMPS dump reader (parsers._dumpscan).

Numbers must come out bit for bit as Python's float() gives them (the
independent reference), rows must stop exactly at the first bad line, and the
line reader must hand out the same lines and tables whatever its chunk size.
"""

from __future__ import annotations

import math
import random
import struct
from decimal import Decimal, localcontext

import numpy as np
import pytest

from parsers import pow5_table
from parsers._dumpscan import BAD, DONE, MORE, parse_rows
from parsers.textio import LineReader


def _parse(tokens: list[str], n_cols: int = 1) -> np.ndarray:
    text = "".join(" ".join(tokens[i : i + n_cols]) + "\n" for i in range(0, len(tokens), n_cols)).encode()
    out = np.full((len(tokens) // n_cols, n_cols), 7.0)
    row, pos, status = parse_rows(text, 0, len(text), out, 0)
    assert (row, pos, status) == (len(out), len(text), DONE)
    return out.ravel()


def _assert_bits_equal(tokens: list[str], got: np.ndarray) -> None:
    want = np.array([float(t) for t in tokens])
    bad = np.flatnonzero(want.view(np.int64) != got.view(np.int64))
    assert not bad.size, [(tokens[i], got[i], want[i]) for i in bad[:5]]


def test_pow5_header_is_the_generated_table():
    assert pow5_table.HEADER.read_text() == pow5_table.header_text()
    with localcontext() as ctx:
        ctx.prec = 300
        for q in (-342, -27, -1, 0, 1, 27, 55, 56, 308):  # 5^q = (M + delta) 2^e, 0 <= delta < 1
            m, e = pow5_table.pow5_entry(q)
            assert 2**127 <= m < 2**128
            exact = Decimal(5) ** q / Decimal(2) ** e if q >= 0 else Decimal(2) ** -e / Decimal(5) ** -q
            assert m <= exact < m + 1


def _random_doubles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite doubles spread over all exponents, plus ones of MD-like magnitude."""
    bits = rng.integers(0, 2**63 - 2**52, size=n, dtype=np.int64)  # below the inf/nan exponent
    values = bits.view(np.float64) * rng.choice([-1.0, 1.0], size=n)
    values[: n // 2] = rng.normal(0.0, 10.0, size=n // 2) * 10.0 ** rng.integers(-6, 4, size=n // 2)
    return values


@pytest.mark.parametrize("form", ["%.17g", "%.16g", "%.15g", "%.19g", "%.20g", "%.6g", "%.12e", "%.18e",
                                  "%r"])
def test_numbers_match_float_bit_for_bit(form):
    rng = np.random.default_rng(abs(hash(form)) % 2**32)
    values = _random_doubles(rng, 20000)
    tokens = [repr(float(v)) if form == "%r" else form % v for v in values]
    _assert_bits_equal(tokens, _parse(tokens))


def test_integers_zeros_signs_and_spellings():
    tokens = ["0", "-0", "+0", "-0.0", "0e5", "-0.000e-999", "1", "-1", "+7", "4000", "9007199254740993",
              "18446744073709551615", "99999999999999999999", "1e22", "1e23", "12345678901234567890123456",
              ".5", "5.", "-.5e1", "1E5", "1e+05", "2.5E-3", "0" * 22 + "1.5", "0.0000000000000000001",
              "1e-320", "4.9e-324", "2e-324", "2.2250738585072011e-308", "1.7976931348623157e308",
              "0." + "0" * 30 + "1" * 25, "1" * 25 + "." + "9" * 30, "1e00000000000000000000010"]
    got = _parse(tokens)
    _assert_bits_equal(tokens, got)
    assert math.copysign(1.0, got[1]) == -1.0 and math.copysign(1.0, got[3]) == -1.0


def test_near_halfway_numbers():
    """Decimals at and next to the exact midpoints between neighbouring doubles,
    written with many digits and cut to 17-19 significant digits."""
    rng = np.random.default_rng(5)
    tokens = []
    with localcontext() as ctx:
        ctx.prec = 800
        for x in _random_doubles(rng, 400):
            x = abs(float(x)) or 1.0
            up = float(np.nextafter(x, math.inf))
            if not math.isfinite(up) or x < 1e-300:
                continue
            mid = (Decimal(x) + Decimal(up)) / 2  # exact
            tokens.append(str(mid))
            tokens += [f"{mid:.{d}e}" for d in (16, 17, 18)]
            tokens += [f"{mid + s * Decimal(x) * Decimal('1e-30'):.40e}" for s in (-1, 1)]
    _assert_bits_equal(tokens, _parse(tokens))


@pytest.mark.parametrize(
    "bad_field", ["nan", "-inf", "inf", "abc", "1e", "1e+", "--1", "1.2.3", "1-2", "0x10", "1_000", "e5", ".",
                  "-", "1,5", "1e999", "\u0661"]
)
def test_bad_field_stops_at_its_row(bad_field):
    text = f"1 2 3\n4 5 6\n7 {bad_field} 9\n10 11 12\n".encode()
    out = np.zeros((4, 3))
    row, pos, status = parse_rows(text, 0, len(text), out, 0)
    assert (row, status) == (2, BAD) and text[pos:].startswith(b"7 ")
    np.testing.assert_array_equal(out[:2], [[1, 2, 3], [4, 5, 6]])


# the bad line last, before one more row, and with more than 32 bytes after it (the scanner's
# word-at-a-time path)
@pytest.mark.parametrize("tail", ["", "7 8 9\n", "0.123456789012345 -1.5e-3 42.0\n" * 3])
@pytest.mark.parametrize("line", ["1 2", "1 2 3 4", "", "   ", "1 2 3 x"])
def test_wrong_field_count_is_bad(line, tail):
    text = f"1 2 3\n{line}\n{tail}".encode()
    out = np.zeros((2 + tail.count("\n"), 3))
    row, pos, status = parse_rows(text, 0, len(text), out, 0)
    assert (row, pos, status) == (1, 6, BAD)


def test_blanks_crlf_and_resuming():
    text = b"  1\t2   3  \r\n4 5 6\r\n7 8"
    out = np.zeros((3, 3))
    end = text.rfind(b"\n") + 1
    assert parse_rows(text, 0, end, out, 0) == (2, end, MORE)
    text += b" 9\n"
    assert parse_rows(text, end, len(text), out, 2) == (3, len(text), DONE)
    np.testing.assert_array_equal(out.ravel(), np.arange(1, 10))


def test_string_columns():
    text = b"1 Cu 0.5\n2 Ni -1e-3\n"
    out, words = np.zeros((2, 3)), []
    assert parse_rows(text, 0, len(text), out, 0, bytes([0, 1, 0]), words) == (2, len(text), DONE)
    assert words == ["Cu", "Ni"]
    np.testing.assert_array_equal(out[:, [0, 2]], [[1, 0.5], [2, -1e-3]])
    assert np.isnan(out[:, 1]).all()


def test_argument_checks():
    with pytest.raises(TypeError):
        parse_rows(b"1\n", 0, 2, np.zeros((1, 1), dtype=np.float32), 0)
    with pytest.raises(ValueError, match="contiguous"):
        parse_rows(b"1\n", 0, 2, np.zeros((2, 2))[:, :1], 0)  # not C-contiguous
    with pytest.raises(ValueError):
        parse_rows(b"1 2", 0, 3, np.zeros((1, 2)), 0)  # end not after a newline
    with pytest.raises(ValueError):
        parse_rows(b"1\n", 0, 5, np.zeros((1, 1)), 0)


def _table_file(path, seed: int) -> list[tuple[bytes, list[list[str]]]]:
    """A file of header lines, each followed by a table of random numbers (some
    lines CRLF, some with trailing blanks, no final newline)."""
    rng = random.Random(seed)
    blocks, text = [], []
    for k in range(40):
        n_rows, n_cols = rng.choice([0, 1, 3, 50]), rng.randint(1, 9)
        header = f"ITEM: block {k} {n_rows} x {n_cols}"
        rows = [[rng.choice(["%.17g", "%.6g", "%d"]) % (rng.uniform(-1e3, 1e3) if rng.random() < 0.8 else
                                                        rng.randint(-5, 4000)) for _ in range(n_cols)]
                for _ in range(n_rows)]
        blocks.append((header.encode(), rows))
        text.append(header + "\n")
        for row in rows:
            text.append(" ".join(row) + rng.choice(["", "  ", "\t"]) + rng.choice(["\n", "\r\n"]))
    path.write_bytes("".join(text).rstrip("\r\n").encode())
    return blocks


@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 16])
def test_line_reader_across_chunk_boundaries(tmp_path, chunk):
    """Header lines and tables come out exactly as written, whatever the chunk size."""
    blocks = _table_file(tmp_path / "t.txt", seed=chunk)
    line = 0
    with LineReader(tmp_path / "t.txt", chunk_size=chunk) as reader:
        for header, rows in blocks:
            assert reader.readline() == header
            out = np.empty((len(rows), len(rows[0]) if rows else 1))
            assert reader.read_table(out) == len(rows)
            line += 1 + len(rows)
            assert reader.line == line
            _assert_bits_equal([w for row in rows for w in row], out.ravel())
        assert reader.readline() is None


def test_line_reader_stops_before_a_bad_or_missing_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"h\n1 2\n3 x\n5 6\n")
    with LineReader(path, chunk_size=3) as reader:
        reader.readline()
        assert reader.read_table(np.empty((3, 2))) == 1 and reader.line == 2
        assert reader.readline() == b"3 x"
        assert reader.read_table(np.empty((2, 2))) == 1 and reader.line == 4
        assert reader.readline() is None


def test_float_bits_of_tokens_written_by_struct():
    """Every double whose bits are a multiple of a large prime: a sweep over all exponents."""
    bits = [(i * 2_654_435_761_234_567) % (0x7FF0 << 48) for i in range(1, 5001)]
    values = [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits]
    tokens = [repr(v) for v in values] + [f"{v:.17g}" for v in values]
    _assert_bits_equal(tokens, _parse(tokens, n_cols=2))
