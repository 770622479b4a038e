"""The compiled scanner's number paths (parsers._dumpscan), against float().

The scanner reads a mantissa word-wise when 32 bytes lie ahead of it and byte
by byte otherwise (near the end of the buffer), converts w * 10^q with one
IEEE operation when w <= 2^53 and |q| <= 22, else through the 128-bit power of
five (with the full 192-bit product near ties), else through Python's own
conversion. Every path must give float()'s bits, and a bad line must be found
wherever it is.
"""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

import numpy as np
import pytest

from parsers._dumpscan import BAD, DONE, parse_rows


def _random_token(rng: random.Random) -> str:
    """A plain decimal of a random shape: sign, 0-25 integer digits (leading
    zeros sometimes), a point or not, 0-25 fraction digits, an exponent or not."""
    def digits(n: int) -> str:
        text = "".join(rng.choice("0123456789") for _ in range(n))
        return "0" * rng.choice([0, 0, 0, 1, 3]) + text if n and rng.random() < 0.2 else text

    while True:
        whole, fraction = digits(rng.choice([0, 1, 1, 2, 3, 7, 8, 9, 15, 16, 17, 19, 20, 25])), ""
        point = rng.random() < 0.7
        if point:
            fraction = digits(rng.choice([0, 1, 2, 5, 6, 7, 8, 9, 15, 16, 17, 18, 19, 23, 25]))
        if whole or fraction:
            break
    token = rng.choice(["", "", "-", "+"]) + whole + ("." if point else "") + fraction
    if rng.random() < 0.4:
        exponent = rng.choice([rng.randint(-25, 25), rng.randint(-340, 310)])
        token += rng.choice("eE") + (rng.choice(["", "+"]) if exponent >= 0 else "-") + str(abs(exponent))
    return token


def _finite_tokens(rng: random.Random, n: int) -> list[str]:
    tokens = []
    while len(tokens) < n:
        token = _random_token(rng)
        if np.isfinite(float(token)):
            tokens.append(token)
    return tokens


def _bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.int64)


def _parse_table(tokens: list[str], n_cols: int) -> np.ndarray:
    text = "".join(" ".join(tokens[i : i + n_cols]) + "\n" for i in range(0, len(tokens), n_cols)).encode()
    out = np.full((len(tokens) // n_cols, n_cols), 7.0)
    assert parse_rows(text, 0, len(text), out, 0) == (len(out), len(text), DONE)
    return out.ravel()


@pytest.mark.parametrize("seed", range(4))
def test_random_shapes_match_float_in_a_table(seed):
    """Word-wise reads (the tokens lie well before the end of the buffer)."""
    tokens = _finite_tokens(random.Random(seed), 6000)
    got = _parse_table(tokens, n_cols=6)
    want = [float(t) for t in tokens]
    bad = np.flatnonzero(_bits(got) != _bits(want))
    assert not bad.size, [(tokens[i], got[i], want[i]) for i in bad[:5]]


def test_random_shapes_match_float_at_the_end_of_the_buffer():
    """Byte-wise reads: each token alone in a buffer shorter than 32 bytes after it."""
    for token in _finite_tokens(random.Random(11), 3000):
        out = np.zeros((1, 1))
        text = token.encode() + b"\n"
        assert parse_rows(text, 0, len(text), out, 0) == (1, len(text), DONE), token
        assert _bits(out[0, 0]) == _bits(float(token)), token


def test_one_operation_path_and_its_edges():
    """w <= 2^53 with |q| <= 22 (one multiplication or division), and next to those limits."""
    tokens = ["9007199254740992", "9007199254740993", "9007199254740992e22", "9007199254740993e22",
              "9007199254740992e-22", "9007199254740992e23", "1e-22", "1e-23", "1e22", "1e23", "123.456e-20",
              "0.1", "0.2", "0.3", "3.14159", "2.718281828459045", "1.7976931348623157e308", "5e-324",
              "4.4501477170144023e-308", "2.2250738585072014e-308", "-0.0000001", "8.98846567431158e307"]
    rng = random.Random(3)
    for _ in range(3000):
        w = rng.randrange(1, 2**53 + 1)
        tokens.append(f"{w}e{rng.randint(-22, 22)}")
        text = str(w)
        cut = rng.randint(0, len(text))
        tokens.append(text[:cut] + "." + text[cut:])
    got = _parse_table(tokens, n_cols=1)
    want = [float(t) for t in tokens]
    bad = np.flatnonzero(_bits(got) != _bits(want))
    assert not bad.size, [(tokens[i], got[i], want[i]) for i in bad[:5]]


def test_full_product_near_ties():
    """19-digit decimals at and one unit (of the 19th digit) around midpoints
    between neighbouring doubles: where the 64-bit product leaves the rounding
    open and the 192-bit one decides."""
    rng = np.random.default_rng(8)
    tokens = []
    with localcontext() as ctx:
        ctx.prec = 1200
        for x in rng.uniform(1.0, 2.0, 400) * 2.0 ** rng.integers(-1000, 1000, 400):
            mid = (Decimal(float(x)) + Decimal(float(np.nextafter(x, np.inf)))) / 2  # exact
            near = Decimal(f"{mid:.18e}")
            unit = Decimal(1).scaleb(near.adjusted() - 18)
            tokens += [f"{near + s * unit:.18e}" for s in (-1, 0, 1)]
    got = _parse_table(tokens, n_cols=3)
    want = [float(t) for t in tokens]
    bad = np.flatnonzero(_bits(got) != _bits(want))
    assert not bad.size, [(tokens[i], got[i], want[i]) for i in bad[:5]]


@pytest.mark.parametrize("bad_row", range(7))
def test_bad_line_found_at_any_row(bad_row):
    """A bad line stops the scan there, with every row before it written."""
    rows = [f"{i} {i + 1}.5 -{i}e-3" for i in range(7)]
    rows[bad_row] = f"{bad_row} x 1"
    text = ("\n".join(rows) + "\n").encode()
    out = np.zeros((7, 3))
    row, pos, status = parse_rows(text, 0, len(text), out, 0)
    assert (row, status) == (bad_row, BAD)
    assert text[pos:].startswith(f"{bad_row} x".encode())
    want = [[float(word) for word in rows[i].split()] for i in range(bad_row)]
    np.testing.assert_array_equal(out[:bad_row], np.reshape(want, (bad_row, 3)))


def test_skipped_columns_are_checked():
    text = b"1 2 3\n4 5 6\n7 8 9\n1 2 1e\n"
    out = np.zeros((4, 3))
    assert parse_rows(text, 0, len(text), out, 0, bytes([0, 0, 2])) == (3, 18, BAD)
    np.testing.assert_array_equal(out[:3, :2], [[1, 2], [4, 5], [7, 8]])
