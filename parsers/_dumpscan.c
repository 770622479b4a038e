/* Fast scanning of whitespace-separated tables of decimal numbers (the atom
 * blocks of LAMMPS text dumps) into a preallocated float64 array.
 *
 * parse_rows(buf, pos, end, out, row, kinds=None, strings=None)
 *     -> (row, pos, status)
 *
 * Parses the lines of buf[pos:end] (end is just past a newline) as rows
 * row, row+1, ... of out, a writable C-contiguous float64 buffer of shape
 * (n_rows, n_columns), until out is full or the data ends. A row is one line
 * of exactly n_columns fields separated by spaces, tabs or carriage returns.
 * kinds (bytes, one per column) marks string columns with 1: their fields are
 * appended, as str, to the list strings and their entries in out become NaN.
 * Returns the next row and position and a status: DONE (out is full), MORE
 * (the data ended first; call again with more data from pos) or BAD (the
 * line at pos is not a row of finite numbers: too few or too many fields, a
 * malformed or non-finite number). Rows before the returned one are written.
 *
 * Numbers are converted exactly as Python's float() does (correctly rounded,
 * round half to even). An integer below 2^53 converts exactly; any other
 * w * 10^q with up to 19 significant digits w goes through a 192-bit
 * product of w with a 128-bit truncation of 5^q
 * (_pow5_table.h). That truncation puts the exact product in an interval of
 * width 2^64 (in units of the product's last bit); when both ends of the
 * interval round to the same double, that double is the answer, since
 * rounding is monotone. Otherwise (a near-tie, about 1 in 2^60 random
 * inputs), more than 19 significant digits, or a result outside the normal
 * range, the token goes to PyOS_string_to_double, which float() uses.
 *
 * Needs a compiler with unsigned __int128 and __builtin_clzll (gcc, clang).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_pow5_table.h"

enum { STATUS_DONE = 0, STATUS_MORE = 1, STATUS_BAD = 2 };

static inline int is_digit(unsigned char c) { return (unsigned char)(c - '0') < 10; }

static inline int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

static const uint64_t powers_of_ten_u64[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

/* Eight ASCII digits (first byte = most significant; byte 0 lowest, little-endian)
 * as a number. Pairwise merge; no lane overflows: 10*9+9 < 2^8, 100*99+99 < 2^16,
 * 10^4*9999+9999 < 2^32. */
static inline uint64_t eight_digit_value(uint64_t x) {
    x -= 0x3030303030303030u;
    x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFu;
    x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFu;
    return (x * 10000 + (x >> 32)) & 0xFFFFFFFFu;
}

/* How many of the eight bytes of x (in memory order) are ASCII digits before the
 * first non-digit. Per byte, bit 7 of (x | x + 0x46) marks >= 0x3A (or >= 0x80) and
 * bit 7 of x - 0x30 marks < 0x30; carries and borrows run only from a byte into
 * the later ones, and digit bytes make none, so the first non-digit is exact. */
static inline int leading_digits(uint64_t x) {
    uint64_t non_digit = ((x | (x + 0x4646464646464646u)) | (x - 0x3030303030303030u)) & 0x8080808080808080u;
    return non_digit ? __builtin_ctzll(non_digit) >> 3 : 8;
}

/* Appends the digits at p to *w (as decimal digits); returns the end of the run.
 * *w is meaningful only while the run's significant digits fit (<= 19 in all).
 * Reads 8 bytes at a time while they lie before hard_end. */
static inline const unsigned char *scan_digits(const unsigned char *p, const unsigned char *hard_end,
                                               uint64_t *w) {
    uint64_t v = *w;
    while (hard_end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        int k = leading_digits(x);
        /* keep the k digits, moved to the top bytes; the bytes below them become '0' */
        uint64_t digits = k ? (x << (8 * (8 - k))) | (0x3030303030303030u >> (8 * k)) : 0x3030303030303030u;
        v = v * powers_of_ten_u64[k] + eight_digit_value(digits);
        p += k;
        if (k < 8) {
            *w = v;
            return p;
        }
    }
    while (is_digit(*p)) v = v * 10 + (uint64_t)(*p++ - '0');
    *w = v;
    return p;
}

/* w * 10^q (w > 0) correctly rounded, through the 128-bit power of five.
 * Returns 0 when undecided (near-tie) or when the result is not a normal double. */
static int scaled_to_double(uint64_t w, int64_t q, int negative, double *out) {
    if (q < POW5_Q_MIN || q > POW5_Q_MAX) return 0;
    const uint64_t *m = pow5_mantissa[q - POW5_Q_MIN];
    int lz = __builtin_clzll(w);
    uint64_t W = w << lz; /* 2^63 <= W < 2^64 */
    /* P = W * M as three 64-bit limbs p2:p1:p0; the exact W*(M+delta) is in [P, P + 2^64). */
    unsigned __int128 low = (unsigned __int128)W * m[1];
    unsigned __int128 high = (unsigned __int128)W * m[0];
    unsigned __int128 mid = (low >> 64) + (uint64_t)high;
    uint64_t p0 = (uint64_t)low, p1 = (uint64_t)mid;
    uint64_t p2 = (uint64_t)(high >> 64) + (uint64_t)(mid >> 64);
    /* P >= 2^190: keep the top 53 bits; `below` bits of p2 lie under them. */
    int below = 10 + (int)(p2 >> 63);
    uint64_t mant = p2 >> below;
    uint64_t rest_mask = (UINT64_C(1) << below) - 1, half = UINT64_C(1) << (below - 1);
    /* Round P (lower end) to nearest, ties to even. */
    uint64_t r = p2 & rest_mask;
    uint64_t up = (r > half) | ((r == half) & (((p1 | p0) != 0) | (mant & 1)));
    uint64_t low_end = mant + up;
    /* Round P + 2^64 (upper end). */
    uint64_t p1u = p1 + 1, ru = r + (p1u == 0);
    uint64_t high_end;
    if (ru > rest_mask) {
        high_end = mant + 1; /* carried into the mantissa; the remainder is < 2^64, far below half */
    } else {
        high_end = mant + ((ru > half) | ((ru == half) & (((p1u | p0) != 0) | (mant & 1))));
    }
    if (low_end != high_end) return 0;
    /* value = mantissa * 2^(bits under it + e + q - lz) */
    int64_t exponent = (128 + below) + pow5_exponent[q - POW5_Q_MIN] + q - lz;
    if (low_end == (UINT64_C(1) << 53)) {
        low_end >>= 1;
        exponent += 1;
    }
    int64_t biased = exponent + 52 + 1023;
    if (biased <= 0 || biased >= 2047) return 0;
    uint64_t bits = ((uint64_t)negative << 63) | ((uint64_t)biased << 52) | (low_end & ((UINT64_C(1) << 52) - 1));
    memcpy(out, &bits, 8);
    return 1;
}

/* The token [start, stop) through PyOS_string_to_double (float()'s own conversion).
 * Returns 1 when it is a finite number, 0 when not, -1 on a memory error. */
static int slow_to_double(const unsigned char *start, const unsigned char *stop, double *out) {
    char small[64];
    size_t len = (size_t)(stop - start);
    char *text = len < sizeof small ? small : PyMem_Malloc(len + 1);
    if (text == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(text, start, len);
    text[len] = '\0';
    char *end = NULL;
    double value = PyOS_string_to_double(text, &end, NULL);
    int ok = !(value == -1.0 && PyErr_Occurred()) && end == text + len && isfinite(value);
    if (PyErr_Occurred()) PyErr_Clear();
    if (text != small) PyMem_Free(text);
    *out = value;
    return ok;
}

/* Parses one number field at p; returns the position after it (at a blank or
 * newline), or NULL when the field is not a finite decimal number. *error is
 * set to -1 on a memory error. hard_end bounds the 8-byte reads; a newline
 * always lies before it. */
static const unsigned char *parse_number(const unsigned char *p, const unsigned char *hard_end, double *out,
                                         int *error) {
    const unsigned char *start = p;
    int negative = *p == '-';
    p += negative | (*p == '+');
    const unsigned char *digits_start = p;
    uint64_t w = 0;
    p = scan_digits(p, hard_end, &w);
    int64_t n_digits = p - digits_start, n_fraction = 0;
    if (*p == '.') {
        const unsigned char *fraction_start = ++p;
        p = scan_digits(p, hard_end, &w);
        n_fraction = p - fraction_start;
        n_digits += n_fraction;
    }
    if (n_digits == 0) return NULL;
    int64_t exponent = 0;
    if ((*p | 0x20) == 'e') {
        p++;
        int exponent_negative = 0;
        if (*p == '-') {
            exponent_negative = 1;
            p++;
        } else if (*p == '+') {
            p++;
        }
        if (!is_digit(*p)) return NULL;
        while (is_digit(*p)) {
            if (exponent < 100000) exponent = exponent * 10 + (*p - '0');
            p++;
        }
        if (exponent_negative) exponent = -exponent;
    }
    if (!(is_blank(*p) || *p == '\n')) return NULL;
    int exact = 1;
    if (n_digits > 19) { /* count significant digits: skip leading zeros (and the point) */
        const unsigned char *s = digits_start;
        int64_t zeros = 0;
        for (; *s == '0' || *s == '.'; s++) zeros += *s == '0';
        exact = n_digits - zeros <= 19;
    }
    if (exact) {
        if (w == 0) {
            *out = negative ? -0.0 : 0.0;
            return p;
        }
        int64_t q = exponent - n_fraction;
        if (q == 0 && w <= (UINT64_C(1) << 53)) { /* an integer: exact */
            double value = (double)w;
            *out = negative ? -value : value;
            return p;
        }
        if (scaled_to_double(w, q, negative, out)) return p;
    }
    int ok = slow_to_double(start, p, out);
    if (ok < 0) *error = -1;
    return ok > 0 ? p : NULL;
}

static PyObject *parse_rows(PyObject *self, PyObject *args) {
    Py_buffer src = {0}, dst = {0}, kinds = {0};
    Py_ssize_t pos, end, row;
    PyObject *out_obj, *kinds_obj = Py_None, *strings = Py_None, *result = NULL;
    if (!PyArg_ParseTuple(args, "y*nnOn|OO:parse_rows", &src, &pos, &end, &out_obj, &row, &kinds_obj, &strings))
        return NULL;
    if (PyObject_GetBuffer(out_obj, &dst, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (dst.ndim != 2 || dst.itemsize != 8 || strcmp(dst.format, "d") != 0) {
        PyErr_SetString(PyExc_TypeError, "out must be a C-contiguous 2-D float64 array");
        goto done;
    }
    Py_ssize_t n_rows = dst.shape[0], n_cols = dst.shape[1];
    if (pos < 0 || end < pos || end > src.len || row < 0 || row > n_rows) {
        PyErr_SetString(PyExc_ValueError, "pos, end or row out of range");
        goto done;
    }
    if (end > pos && ((const char *)src.buf)[end - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "buf[end - 1] must be a newline");
        goto done;
    }
    const unsigned char *kind = NULL;
    if (kinds_obj != Py_None) {
        if (PyObject_GetBuffer(kinds_obj, &kinds, PyBUF_SIMPLE) < 0) goto done;
        if (kinds.len != n_cols || !PyList_Check(strings)) {
            PyErr_SetString(PyExc_ValueError, "kinds needs one byte per column and strings a list");
            goto done;
        }
        kind = kinds.buf;
    }
    const unsigned char *base = src.buf;
    const unsigned char *p = base + pos, *limit = base + end, *hard_end = base + src.len;
    double *o = (double *)dst.buf + row * n_cols;
    int status = STATUS_DONE, error = 0;
    for (; row < n_rows; row++, o += n_cols) {
        if (p >= limit) {
            status = STATUS_MORE;
            break;
        }
        const unsigned char *line = p;
        for (Py_ssize_t j = 0; j < n_cols; j++) {
            while (is_blank(*p)) p++;
            if (*p == '\n') goto bad;
            if (kind != NULL && kind[j]) {
                const unsigned char *token = p;
                while (!is_blank(*p) && *p != '\n') p++;
                PyObject *text = PyUnicode_DecodeUTF8((const char *)token, p - token, "replace");
                if (text == NULL || PyList_Append(strings, text) < 0) {
                    Py_XDECREF(text);
                    goto done;
                }
                Py_DECREF(text);
                o[j] = NAN;
                continue;
            }
            p = parse_number(p, hard_end, &o[j], &error);
            if (p == NULL) {
                if (error) goto done;
                goto bad;
            }
        }
        while (is_blank(*p)) p++;
        if (*p != '\n') goto bad;
        p++;
        continue;
    bad:
        p = line;
        status = STATUS_BAD;
        break;
    }
    result = Py_BuildValue("nni", row, (Py_ssize_t)(p - base), status);
done:
    PyBuffer_Release(&src);
    if (dst.obj) PyBuffer_Release(&dst);
    if (kinds.obj) PyBuffer_Release(&kinds);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_rows", parse_rows, METH_VARARGS,
     "parse_rows(buf, pos, end, out, row, kinds=None, strings=None) -> (row, pos, status)\n\n"
     "Parse lines of buf[pos:end] as rows of numbers into the float64 array out\n"
     "(see parsers/_dumpscan.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_dumpscan", "Fast parsing of tables of decimal numbers into float64 arrays.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__dumpscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "DONE", STATUS_DONE) < 0 || PyModule_AddIntConstant(m, "MORE", STATUS_MORE) < 0 ||
        PyModule_AddIntConstant(m, "BAD", STATUS_BAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
