/* Fast scanning of whitespace-separated tables of decimal numbers (the atom
 * blocks of LAMMPS text dumps) into a preallocated float64 array.
 *
 * parse_rows(buf, pos, end, out, row, kinds=None, strings=None, threads=1)
 *     -> (row, pos, status)
 *
 * Parses the lines of buf[pos:end] (end is just past a newline) as rows
 * row, row+1, ... of out, a writable C-contiguous float64 buffer of shape
 * (n_rows, n_columns), until out is full or the data ends. A row is one line
 * of exactly n_columns fields separated by spaces, tabs or carriage returns.
 * kinds (bytes, one per column) says what to do with each column's fields:
 * 0 (or kinds=None) converts them, 1 marks string columns, whose fields are
 * appended, as str, to the list strings (their entries in out become NaN),
 * 2 skips them: they must still look like plain decimal numbers, but are
 * not converted (so one that overflows passes) and out is not written.
 * Returns the next row and position and a status: DONE (out is full), MORE
 * (the data ended first; call again with more data from pos) or BAD (the
 * line at pos is not a row of finite numbers: too few or too many fields, a
 * malformed or non-finite number). Rows before the returned one are written.
 *
 * threads > 1 lets a large table without string columns be parsed by up to
 * that many threads with the GIL released: the lines wanted are split into
 * pieces of consecutive lines (about 16 per thread), which the calling
 * thread and pool workers (kept from call to call) take one by one, and the
 * pieces' results are combined so that the call returns exactly what
 * threads=1 returns (on bad input: the first bad line, with every row before
 * it written).
 *
 * start_rows(...) -> Scan, Scan.finish() -> (row, pos, status): parse_rows in
 * two steps, the pieces parsed by the workers in the background between
 * them; see below.
 *
 * take_rows(table, order, takes): see below; the gather that builds a
 * frame's arrays from the parsed table.
 *
 * Numbers are converted exactly as Python's float() does (correctly rounded,
 * round half to even). The digits are read a word (8 bytes) at a time. A
 * number w * 10^q with w <= 2^53 and |q| <= 22 takes one IEEE multiplication
 * or division of two exact doubles, which rounds correctly. Any other with up
 * to 19 significant digits w goes through the product of w with a 128-bit
 * truncation of 5^q (_pow5_table.h). That truncation puts the exact product
 * in an interval of width 2^64 (in units of the product's last bit); when
 * both ends of the interval round to the same double, that double is the
 * answer, since rounding is monotone (the product with the high 64 bits of
 * 5^q alone settles that in all but about 1 in 500 cases). Otherwise (a
 * near-tie, about 1 in 2^60 random inputs), more than 19 significant digits,
 * or a result outside the normal range, the token goes to
 * PyOS_string_to_double, which float() uses (with the GIL taken back for it
 * when threads run).
 *
 * Needs a compiler with unsigned __int128 and __builtin_clzll (gcc, clang),
 * and POSIX threads.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "_pow5_table.h"

enum { STATUS_DONE = 0, STATUS_MORE = 1, STATUS_BAD = 2 };
enum { KIND_NUMBER = 0, KIND_STRING = 1, KIND_SKIP = 2 };

static inline int is_digit(unsigned char c) { return (unsigned char)(c - '0') < 10; }

static inline int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r'; }

static const uint64_t powers_of_ten_u64[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

/* The powers of ten that doubles hold exactly (5^22 < 2^53). */
static const double exact_powers_of_ten[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static inline uint64_t load8(const unsigned char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* Bit 7 set in each byte of x (memory order = little-endian lanes) that is not
 * an ASCII digit: bit 7 of (x | x + 0x46) marks >= 0x3A (or >= 0x80) and bit 7
 * of x - 0x30 marks < 0x30. Carries and borrows run only from a byte into the
 * later ones and digit bytes make none, so the lowest set bit is exact; later
 * ones may be spurious, and only the lowest is ever used. */
static inline uint64_t non_digits(uint64_t x) {
    return ((x | (x + 0x4646464646464646u)) | (x - 0x3030303030303030u)) & 0x8080808080808080u;
}

/* The index of the first byte marked by non_digits (mask != 0). */
static inline int first_marked(uint64_t mask) { return __builtin_ctzll(mask) >> 3; }

/* The value of the first k (0..8) bytes of x, which are ASCII digits, the first
 * one most significant. The k digit values are shifted to the top bytes (the
 * bytes after them fall off; the shift is split in two so that k = 0 shifts out
 * everything without a 64-bit shift), then neighbours are merged by one
 * multiplication per level: times 10 * 2^8 + 1, byte 2i+1 gets digit 2i+1 plus
 * 10 times digit 2i (no byte exceeds 99: no carries), and so on for pairs of
 * 16-bit (<= 9999) and 32-bit (<= 99999999) lanes. */
static inline uint64_t digits_value(uint64_t x, int k) {
    uint64_t d = x - 0x3030303030303030u; /* digit bytes make no borrow, so the first k are exact */
    int half_shift = 32 - 4 * k;
    d = (d << half_shift) << half_shift;
    d = ((d * (10 * (UINT64_C(1) << 8) + 1)) >> 8) & 0x00FF00FF00FF00FFu;
    d = ((d * (100 * (UINT64_C(1) << 16) + 1)) >> 16) & 0x0000FFFF0000FFFFu;
    return (d * (10000 * (UINT64_C(1) << 32) + 1)) >> 32;
}

/* The digits of a decimal mantissa "ddd", "ddd.ddd", ".ddd" or "ddd.":
 * w = all its digits as one integer modulo 2^64 (exact when no more than 19 of
 * them are significant), n_digits in all, n_fraction of them after the point. */
struct mantissa {
    uint64_t w;
    int64_t n_digits, n_fraction;
};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
enum { FAST_MANTISSA_BYTES = 32 }; /* what mantissa_fast reads from p */

/* The mantissa at p without a loop, for the usual shapes: fewer than 8 digits
 * before the point and fewer than 24 in all. The point, if any, is cut out of
 * the 32 bytes read, so that the digits lie in three consecutive words, then
 * each word's digits are converted at once. Reads FAST_MANTISSA_BYTES bytes
 * from p; returns the end of the mantissa, or NULL for other shapes. */
static inline const unsigned char *mantissa_fast(const unsigned char *p, struct mantissa *m) {
    uint64_t x0 = load8(p), x1 = load8(p + 8), x2 = load8(p + 16);
    uint64_t mask = non_digits(x0);
    if (mask == 0) return NULL;
    int n_int = first_marked(mask), point = p[n_int] == '.';
    if (point) { /* shift the bytes after the point down by one */
        uint64_t below = (UINT64_C(1) << (8 * n_int)) - 1;
        x0 = (x0 & below) | ((x0 >> 8) & ~below) | (x1 << 56);
        x1 = (x1 >> 8) | (x2 << 56);
        x2 = (x2 >> 8) | (load8(p + 24) << 56);
        mask = non_digits(x0);
    }
    /* Lengths are alike from line to line, so these branches predict well. */
    int n;
    uint64_t w;
    if (mask) {
        n = first_marked(mask);
        w = digits_value(x0, n);
    } else if ((mask = non_digits(x1))) {
        int k = first_marked(mask);
        n = 8 + k;
        w = digits_value(x0, 8) * powers_of_ten_u64[k] + digits_value(x1, k);
    } else if ((mask = non_digits(x2))) {
        int k = first_marked(mask);
        n = 16 + k;
        w = (digits_value(x0, 8) * powers_of_ten_u64[8] + digits_value(x1, 8)) * powers_of_ten_u64[k] +
            digits_value(x2, k); /* modulo 2^64 beyond 19 digits: exact when the leading ones are zeros */
    } else {
        return NULL;
    }
    m->w = w;
    m->n_digits = n;
    m->n_fraction = point ? n - n_int : 0;
    return p + n + point;
}
#else
enum { FAST_MANTISSA_BYTES = 0 }; /* big-endian: byte by byte only */
static inline const unsigned char *mantissa_fast(const unsigned char *p, struct mantissa *m) { return NULL; }
#endif

/* The mantissa at p, byte by byte: any length (near the end of the buffer, or
 * long tokens). Returns its end. */
static const unsigned char *mantissa_bytewise(const unsigned char *p, struct mantissa *m) {
    const unsigned char *start = p;
    uint64_t w = 0;
    while (is_digit(*p)) w = w * 10 + (uint64_t)(*p++ - '0');
    int point = *p == '.';
    const unsigned char *fraction = p += point;
    if (point)
        while (is_digit(*p)) w = w * 10 + (uint64_t)(*p++ - '0');
    m->w = w;
    m->n_fraction = p - fraction;
    m->n_digits = (p - start) - point;
    return p;
}

/* The mantissa of W * 5^q rounded to 53 bits (nearest, ties to even) through
 * the full 192-bit product P = W * M (M: the table's 128 bits of 5^q), whose
 * top word has `below` bits under the mantissa. The exact W*(M+delta) is in
 * [P, P + 2^64); returns the rounding of both ends when they agree, else 0
 * (undecided: a near-tie, about 1 in 2^60 random inputs). */
static __attribute__((noinline)) uint64_t rounded_product(uint64_t W, const uint64_t *m, int below) {
    unsigned __int128 low = (unsigned __int128)W * m[1];
    unsigned __int128 high = (unsigned __int128)W * m[0];
    unsigned __int128 mid = (low >> 64) + (uint64_t)high;
    uint64_t p0 = (uint64_t)low, p1 = (uint64_t)mid;
    uint64_t p2 = (uint64_t)(high >> 64) + (uint64_t)(mid >> 64);
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
    return low_end == high_end ? low_end : 0;
}

/* w * 10^q (w > 0) correctly rounded, through the 128-bit power of five.
 * Returns 0 when undecided (near-tie) or when the result is not a normal double. */
static inline int scaled_to_double(uint64_t w, int64_t q, int negative, double *out) {
    if (q < POW5_Q_MIN || q > POW5_Q_MAX) return 0;
    const uint64_t *m = pow5_mantissa[q - POW5_Q_MIN];
    int lz = __builtin_clzll(w);
    uint64_t W = w << lz; /* 2^63 <= W < 2^64 */
    /* First W times the high word of M alone, H = h1:h0 >= 2^126. The exact
     * W*(M+delta) lies in [H * 2^64, H * 2^64 + 2^128): h1 is exact up to +1
     * (a carry from below it). Keep the top 53 bits of h1; `below` bits lie
     * under them. Unless those bits r are half or half - 1, the carry cannot
     * change how they round (and a carry into the mantissa itself gives the
     * same rounded value), so the 192-bit product is needed about once in
     * 2^(below - 1) >= 512 numbers. */
    uint64_t h1 = (uint64_t)(((unsigned __int128)W * m[0]) >> 64);
    int below = 10 + (int)(h1 >> 63); /* a carry never changes bit 63 here: it would need r = all ones */
    uint64_t half = UINT64_C(1) << (below - 1), r = h1 & ((UINT64_C(1) << below) - 1);
    uint64_t mant = r - (half - 1) <= 1 ? rounded_product(W, m, below) : (h1 >> below) + (r > half);
    if (mant == 0) return 0;
    /* value = mant * 2^(bits under it + e + q - lz) */
    int64_t exponent = (128 + below) + pow5_exponent[q - POW5_Q_MIN] + q - lz;
    if (mant == (UINT64_C(1) << 53)) {
        mant >>= 1;
        exponent += 1;
    }
    int64_t biased = exponent + 52 + 1023;
    if (biased <= 0 || biased >= 2047) return 0;
    uint64_t bits = ((uint64_t)negative << 63) | ((uint64_t)biased << 52) | (mant & ((UINT64_C(1) << 52) - 1));
    memcpy(out, &bits, 8);
    return 1;
}

/* The token [start, stop) through PyOS_string_to_double (float()'s own
 * conversion), which needs the GIL: taken for the call when gil_released.
 * Returns 1 when it is a finite number, 0 when not, -1 when out of memory
 * (no Python error set: the caller may not hold the GIL). */
static __attribute__((noinline)) int slow_to_double(const unsigned char *start, const unsigned char *stop,
                                                    double *out, int gil_released) {
    char small[64];
    size_t len = (size_t)(stop - start);
    char *text = len < sizeof small ? small : PyMem_RawMalloc(len + 1);
    if (text == NULL) return -1;
    memcpy(text, start, len);
    text[len] = '\0';
    PyGILState_STATE gil = gil_released ? PyGILState_Ensure() : PyGILState_LOCKED;
    char *end = NULL;
    double value = PyOS_string_to_double(text, &end, NULL);
    int ok = !(value == -1.0 && PyErr_Occurred()) && end == text + len && isfinite(value);
    if (PyErr_Occurred()) PyErr_Clear();
    if (gil_released) PyGILState_Release(gil);
    if (text != small) PyMem_RawFree(text);
    *out = value;
    return ok;
}

/* A plain decimal number: [sign] mantissa [e|E [sign] digits]. */
struct decimal {
    struct mantissa m;
    int negative;
    int64_t exponent; /* capped at +-100000: far beyond any double */
};

/* Reads the number at p into *d; returns the position after it (at a blank
 * or newline), or NULL when the field is not a plain decimal number. hard_end
 * bounds the 8-byte reads; a newline always lies before it. Inlined into both
 * of its callers, so that the column loop makes no calls. */
static inline __attribute__((always_inline)) const unsigned char *
scan_decimal(const unsigned char *p, const unsigned char *hard_end, struct decimal *d) {
    d->negative = *p == '-';
    p += d->negative | (*p == '+');
    const unsigned char *fast = hard_end - p >= FAST_MANTISSA_BYTES ? mantissa_fast(p, &d->m) : NULL;
    p = fast ? fast : mantissa_bytewise(p, &d->m);
    if (d->m.n_digits == 0) return NULL;
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
    d->exponent = exponent;
    return is_blank(*p) || *p == '\n' ? p : NULL;
}

/* Whether no more than 19 of the n_digits digits of the mantissa at p are
 * significant, i.e. whether struct mantissa's w is exact. (Rare, like the
 * other noinline functions here: kept out of the inlined column loop.) */
static __attribute__((noinline)) int fits_19_digits(const unsigned char *p, int64_t n_digits) {
    int64_t zeros = 0;
    for (; *p == '0' || *p == '.'; p++) zeros += *p == '0';
    return n_digits - zeros <= 19;
}

/* The value of the number [start, stop) scanned into *d, as float() gives it;
 * returns 0 when it is not finite, -1 when out of memory. */
static inline __attribute__((always_inline)) int
decimal_to_double(const struct decimal *d, const unsigned char *start, const unsigned char *stop, double *out,
                  int gil_released) {
    uint64_t w = d->m.w;
    int negative = d->negative;
    const unsigned char *digits = start + (*start == '-' || *start == '+');
    if (d->m.n_digits <= 19 || fits_19_digits(digits, d->m.n_digits)) {
        if (w == 0) {
            *out = negative ? -0.0 : 0.0;
            return 1;
        }
        int64_t q = d->exponent - d->m.n_fraction;
        if (w <= (UINT64_C(1) << 53) && q >= -22 && q <= 22) {
            /* w and 10^|q| are exact doubles, and one IEEE multiplication or
             * division rounds correctly (on x86-64 and arm64 doubles are
             * computed in double precision: FLT_EVAL_METHOD 0). */
            double value = q < 0 ? (double)w / exact_powers_of_ten[-q] : (double)w * exact_powers_of_ten[q];
            *out = negative ? -value : value;
            return 1;
        }
        if (scaled_to_double(w, q, negative, out)) return 1;
    }
    return slow_to_double(start, stop, out, gil_released);
}

/* What all pieces of one parse_rows call share. */
struct table {
    const unsigned char *hard_end; /* end of the buffer: bound of the 8-byte reads */
    const unsigned char *kind;     /* one KIND_* per column, or NULL: all numbers */
    Py_ssize_t n_cols;
    double *out;                   /* row 0 of out */
    PyObject *strings;             /* list taking the string columns' fields (GIL held) */
    int gil_released;
};

/* A run of lines parsed as rows row .. end_row - 1 (in: the first ones; out:
 * where it stopped). */
struct piece {
    const struct table *table;
    const unsigned char *p, *stop; /* lines [p, stop); out: the line where it stopped */
    Py_ssize_t row, end_row;
    int status; /* out: DONE (row == end_row), MORE (p == stop first) or BAD (at line p) */
    int error;  /* out: 0, -1 when out of memory, -2 when a Python error is set */
};

/* One field of a number column (KIND_NUMBER, or KIND_SKIP: checked to be a
 * plain decimal number, not converted nor written) at p, after its blanks;
 * returns its end, or NULL when it is not a (finite) number (*error = -1:
 * out of memory). */
static inline __attribute__((always_inline)) const unsigned char *
number_field(const struct table *t, const unsigned char *p, double *o, int kind, int *error) {
    while (is_blank(*p)) p++;
    const unsigned char *start = p;
    struct decimal d;
    p = scan_decimal(p, t->hard_end, &d);
    if (p == NULL || kind == KIND_SKIP) return p;
    int ok = decimal_to_double(&d, start, p, o, t->gil_released);
    if (ok < 0) *error = -1;
    return ok > 0 ? p : NULL;
}

/* The end of a row whose last field ends at p: the position after the
 * newline, or NULL when more than blanks follow. */
static inline const unsigned char *row_end(const unsigned char *p) {
    while (is_blank(*p)) p++;
    return *p == '\n' ? p + 1 : NULL;
}

/* Parses the line at p as one row into o; returns the position after its
 * newline, or NULL when it is not a row (*error: -1 out of memory, -2 a
 * Python error set). */
static const unsigned char *parse_row(const struct table *t, const unsigned char *p, double *o, int *error) {
    for (Py_ssize_t j = 0; j < t->n_cols; j++) {
        int kind = t->kind == NULL ? KIND_NUMBER : t->kind[j];
        if (kind != KIND_STRING) {
            p = number_field(t, p, &o[j], kind, error);
            if (p == NULL) return NULL;
            continue;
        }
        while (is_blank(*p)) p++;
        if (*p == '\n') return NULL;
        const unsigned char *token = p;
        while (!is_blank(*p) && *p != '\n') p++;
        PyObject *text = PyUnicode_DecodeUTF8((const char *)token, p - token, "replace");
        if (text == NULL || PyList_Append(t->strings, text) < 0) {
            Py_XDECREF(text);
            *error = -2;
            return NULL;
        }
        Py_DECREF(text);
        o[j] = NAN;
    }
    return row_end(p);
}

static void parse_piece(struct piece *piece) {
    const struct table *t = piece->table;
    const unsigned char *p = piece->p, *stop = piece->stop;
    Py_ssize_t row = piece->row, n_cols = t->n_cols;
    double *o = t->out + row * n_cols;
    int status = STATUS_DONE, error = 0;
    while (row < piece->end_row) {
        if (p >= stop) {
            status = STATUS_MORE;
            break;
        }
        const unsigned char *next = parse_row(t, p, o, &error);
        if (next == NULL) {
            status = STATUS_BAD;
            break;
        }
        row++, o += n_cols, p = next;
    }
    piece->row = row;
    piece->p = p;
    piece->status = status;
    piece->error = error;
}

enum { MAX_THREADS = 16 };

/* Tasks shared out among threads: each thread takes the next one not yet
 * taken until none is left, so that a thread that gets less CPU time (on a
 * busy machine) does fewer of them. */
struct tasks {
    void (*run)(void *task);
    char *data; /* task i at data + i * size */
    size_t size;
    Py_ssize_t n;
    Py_ssize_t next; /* the next task to take (atomic) */
};

static void *take_tasks(void *arg) {
    struct tasks *tasks = arg;
    for (;;) {
        Py_ssize_t i = __atomic_fetch_add(&tasks->next, 1, __ATOMIC_RELAXED);
        if (i >= tasks->n) return NULL;
        tasks->run(tasks->data + i * tasks->size);
    }
}

/* Worker threads, started when first needed and kept (starting a thread costs
 * tens of microseconds, as much as parsing a few hundred lines). They sleep
 * until offer_tasks offers them tasks; a forked child starts without them. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    int n_workers;         /* started */
    int busy;              /* offered tasks have them until finish_tasks (others run their tasks alone) */
    int wanted;            /* workers 0 .. wanted - 1 may join the current tasks */
    int active;            /* workers taking tasks now */
    unsigned long round;   /* counts the offers */
    struct tasks *current; /* the tasks on offer, or NULL */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void *pool_worker(void *arg) {
    int index = (int)(intptr_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.round == seen) pthread_cond_wait(&pool.wake, &pool.lock);
        seen = pool.round;
        struct tasks *tasks = pool.current;
        if (tasks == NULL || index >= pool.wanted) continue; /* too late, or not wanted */
        pool.active++;
        pthread_mutex_unlock(&pool.lock);
        take_tasks(tasks);
        pthread_mutex_lock(&pool.lock);
        if (--pool.active == 0) pthread_cond_signal(&pool.idle);
    }
    return NULL;
}

static void pool_after_fork(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.idle, NULL);
    pool.n_workers = pool.busy = pool.wanted = pool.active = 0;
    pool.current = NULL;
}

/* Offers tasks to up to n_threads - 1 pool workers (started when first
 * needed), which start on them at once; returns whether they were offered
 * (not when another call has the workers). finish_tasks must follow, and the
 * tasks must stay in place until it returns. */
static int offer_tasks(struct tasks *tasks, int n_threads) {
    pthread_mutex_lock(&pool.lock);
    int offered = !pool.busy;
    if (offered) {
        pool.busy = 1;
        if (pool.n_workers < n_threads - 1) {
            sigset_t all, old; /* workers take no signals: they stay with Python's threads */
            sigfillset(&all);
            pthread_sigmask(SIG_BLOCK, &all, &old);
            while (pool.n_workers < n_threads - 1) {
                pthread_t thread;
                if (pthread_create(&thread, NULL, pool_worker, (void *)(intptr_t)pool.n_workers) != 0) break;
                pthread_detach(thread);
                pool.n_workers++;
            }
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
        pool.current = tasks;
        pool.wanted = n_threads - 1;
        pool.round++;
        pthread_cond_broadcast(&pool.wake);
    }
    pthread_mutex_unlock(&pool.lock);
    return offered;
}

/* Runs the tasks not yet taken in the calling thread, so that all get done
 * however late the workers come, or without them (offered = 0: another call
 * had them, or no thread was wanted); returns when no worker is still in one
 * of them. Called without the GIL. */
static void finish_tasks(struct tasks *tasks, int offered) {
    take_tasks(tasks);
    if (!offered) return;
    pthread_mutex_lock(&pool.lock);
    pool.current = NULL; /* workers waking from now on leave these tasks alone */
    while (pool.active > 0) pthread_cond_wait(&pool.idle, &pool.lock);
    pool.busy = 0;
    pthread_mutex_unlock(&pool.lock);
}

static void parse_piece_task(void *piece) { parse_piece(piece); }

enum {
    PIECES_PER_THREAD = 16,       /* tasks per thread: small enough to share out evenly */
    MIN_PIECE_BYTES = 64 * 1024,  /* a thread per this much text at most */
};

/* ------------------------------------------------------------------ start_rows
 *
 * start_rows(buf, pos, end, out, row, kinds=None, strings=None, threads=1) -> Scan
 * Scan.finish() -> (row, pos, status)
 *
 * parse_rows in two steps, so that a table can be parsed in the background
 * while the caller does other work (builds the previous frame). start_rows
 * checks the arguments and, when the table is parsed in pieces (threads > 1,
 * no string columns, enough text), offers the pieces to the pool's workers,
 * which start on them at once. finish() parses the pieces not yet taken in
 * the calling thread (GIL released), waits for the workers, and returns what
 * parse_rows returns; a table not parsed in pieces is parsed by finish()
 * alone. Until finish() returns, the Scan holds the buffers of buf, out and
 * kinds (exported, so that they can be neither resized nor freed); buf's
 * bytes must not change meanwhile (not checked). A Scan dropped unfinished
 * waits for its workers first. parse_rows(...) is start_rows(...).finish().
 */

typedef struct {
    PyObject_HEAD
    Py_buffer src, dst, kinds;
    PyObject *strings; /* the list taking string fields (a new reference), or NULL */
    struct table table;
    struct piece whole; /* the table as one piece, for finish() when not in pieces */
    int in_pieces;      /* the pieces are parsed with the GIL released */
    int offered;        /* ... and were offered to pool workers */
    int held;           /* buffers held: finish() not yet returned */
    struct tasks tasks;
    struct piece pieces[MAX_THREADS * PIECES_PER_THREAD + 2];
} ScanObject;

static void scan_release(ScanObject *self) {
    if (self->src.obj) PyBuffer_Release(&self->src);
    if (self->dst.obj) PyBuffer_Release(&self->dst);
    if (self->kinds.obj) PyBuffer_Release(&self->kinds);
    Py_CLEAR(self->strings);
    self->held = 0;
}

/* Waits for the pieces on offer (parsing those not yet taken). */
static void scan_wait(ScanObject *self) {
    Py_BEGIN_ALLOW_THREADS
    finish_tasks(&self->tasks, self->offered);
    Py_END_ALLOW_THREADS
    self->offered = 0;
}

static void scan_dealloc(ScanObject *self) {
    if (self->held && self->in_pieces) scan_wait(self);
    scan_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Splits the lines of [p, limit) wanted as rows row .. n_rows - 1 into pieces
 * of consecutive lines (about PIECES_PER_THREAD per thread) and offers them
 * to up to n_threads threads. */
static void scan_offer_pieces(ScanObject *self, const unsigned char *p, const unsigned char *limit,
                              Py_ssize_t row, Py_ssize_t n_rows, int n_threads) {
    const struct table *t = &self->table;
    struct piece *pieces = self->pieces;
    /* Walk the wanted lines; a piece starts at every step-th. */
    Py_ssize_t step = (n_rows - row) / (n_threads * PIECES_PER_THREAD) + 1, n_pieces = 0, n_lines = 0;
    const unsigned char *stop = p;
    for (Py_ssize_t countdown = 0; n_lines < n_rows - row && stop < limit; n_lines++, countdown--) {
        if (countdown == 0) {
            pieces[n_pieces++] = (struct piece){.table = t, .p = stop, .row = row + n_lines};
            countdown = step;
        }
        stop = (const unsigned char *)memchr(stop, '\n', limit - stop) + 1; /* limit[-1] is a newline */
    }
    if (n_pieces == 0) pieces[n_pieces++] = (struct piece){.table = t, .p = p, .row = row};
    for (Py_ssize_t i = 0; i < n_pieces - 1; i++) {
        pieces[i].stop = pieces[i + 1].p;
        pieces[i].end_row = pieces[i + 1].row;
    }
    pieces[n_pieces - 1].stop = stop;
    pieces[n_pieces - 1].end_row = n_rows; /* the last one ends like the whole */
    Py_ssize_t most = (stop - p) / MIN_PIECE_BYTES;
    if (most < n_threads) n_threads = most < 1 ? 1 : (int)most;
    self->tasks = (struct tasks){.run = parse_piece_task, .data = (char *)pieces, .size = sizeof pieces[0],
                                 .n = n_pieces};
    self->in_pieces = 1;
    self->offered = n_threads > 1 && offer_tasks(&self->tasks, n_threads);
}

static PyTypeObject ScanType;

static PyObject *start_rows(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"buf", "pos", "end", "out", "row", "kinds", "strings", "threads", NULL};
    Py_ssize_t pos, end, row;
    PyObject *out_obj, *kinds_obj = Py_None, *strings = Py_None;
    int n_threads = 1;
    ScanObject *self = PyObject_New(ScanObject, &ScanType);
    if (self == NULL) return NULL;
    self->src = self->dst = self->kinds = (Py_buffer){0};
    self->strings = NULL;
    self->in_pieces = self->offered = 0;
    self->held = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnOn|OOi:parse_rows", keywords, &self->src, &pos, &end,
                                     &out_obj, &row, &kinds_obj, &strings, &n_threads))
        goto error;
    if (PyObject_GetBuffer(out_obj, &self->dst, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto error;
    Py_buffer *dst = &self->dst;
    if (dst->ndim != 2 || dst->itemsize != 8 || strcmp(dst->format, "d") != 0) {
        PyErr_SetString(PyExc_TypeError, "out must be a C-contiguous 2-D float64 array");
        goto error;
    }
    Py_ssize_t n_rows = dst->shape[0], n_cols = dst->shape[1];
    if (pos < 0 || end < pos || end > self->src.len || row < 0 || row > n_rows) {
        PyErr_SetString(PyExc_ValueError, "pos, end or row out of range");
        goto error;
    }
    if (end > pos && ((const char *)self->src.buf)[end - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "buf[end - 1] must be a newline");
        goto error;
    }
    if (n_threads < 1) {
        PyErr_SetString(PyExc_ValueError, "threads must be at least 1");
        goto error;
    }
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    const unsigned char *base = self->src.buf;
    self->table = (struct table){.hard_end = base + self->src.len, .n_cols = n_cols, .out = dst->buf};
    int has_strings = 0;
    if (kinds_obj != Py_None) {
        if (PyObject_GetBuffer(kinds_obj, &self->kinds, PyBUF_SIMPLE) < 0) goto error;
        const unsigned char *kind = self->table.kind = self->kinds.buf;
        int known = 1;
        for (Py_ssize_t j = 0; j < self->kinds.len; j++) {
            known &= kind[j] <= KIND_SKIP;
            has_strings |= kind[j] == KIND_STRING;
        }
        if (self->kinds.len != n_cols || !known || (has_strings && !PyList_Check(strings))) {
            PyErr_SetString(PyExc_ValueError,
                            "kinds needs one byte (0, 1 or 2) per column, and strings a list for kind 1");
            goto error;
        }
        self->table.strings = self->strings = Py_NewRef(strings);
    }
    self->whole = (struct piece){.table = &self->table, .p = base + pos, .stop = base + end, .row = row,
                                 .end_row = n_rows};
    if (n_threads > 1 && !has_strings && end - pos >= 2 * MIN_PIECE_BYTES) {
        self->table.gil_released = 1;
        scan_offer_pieces(self, base + pos, base + end, row, n_rows, n_threads);
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static PyObject *scan_finish(ScanObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->held) {
        PyErr_SetString(PyExc_ValueError, "finish() was called before");
        return NULL;
    }
    struct piece *piece = &self->whole;
    if (self->in_pieces) {
        scan_wait(self);
        /* The first piece that did not reach its end is where one piece would
         * have stopped (each piece but the last ends exactly where the next
         * begins). */
        Py_ssize_t i = 0;
        while (i < self->tasks.n - 1 && self->pieces[i].status == STATUS_DONE && self->pieces[i].error == 0) i++;
        piece = &self->pieces[i];
    } else {
        parse_piece(piece);
    }
    PyObject *result = NULL;
    if (piece->error == -1) PyErr_NoMemory();
    if (!piece->error)
        result = Py_BuildValue("nni", piece->row, (Py_ssize_t)(piece->p - (const unsigned char *)self->src.buf),
                               piece->status);
    scan_release(self);
    return result;
}

static PyMethodDef scan_methods[] = {
    {"finish", (PyCFunction)scan_finish, METH_NOARGS,
     "finish() -> (row, pos, status): wait for the parse, as parse_rows returns it (once)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parsers._dumpscan.Scan",
    .tp_basicsize = sizeof(ScanObject),
    .tp_dealloc = (destructor)scan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A table being parsed (start_rows); finish() waits for it.",
    .tp_methods = scan_methods,
};

static PyObject *parse_rows(PyObject *module, PyObject *args, PyObject *kwargs) {
    PyObject *scan = start_rows(module, args, kwargs);
    if (scan == NULL) return NULL;
    PyObject *result = scan_finish((ScanObject *)scan, NULL);
    Py_DECREF(scan);
    return result;
}

/* ------------------------------------------------------------------ take_rows
 *
 * take_rows(table, order, takes) -> None
 *
 * Gathers columns of the rows of table (a C-contiguous (n_rows, n_columns)
 * float64 buffer) in the order given by order (a C-contiguous int64 buffer of
 * row numbers, or None: 0, 1, ..., n_rows - 1): for each (columns, out) in
 * takes, out[i, k] = table[order[i], columns[k]], out being a writable
 * C-contiguous float64 buffer of len(order) rows of len(columns) values.
 * (One pass for all takes, a few times faster than numpy.take per take. Not
 * threaded: most of its time goes to first writes to new memory, whose page
 * faults do not get faster from two threads.)
 */

enum { MAX_TAKES = 8, MAX_TAKE_WIDTH = 16 };

struct take {
    double *out;
    Py_ssize_t width, columns[MAX_TAKE_WIDTH];
};

static PyObject *take_rows(PyObject *self, PyObject *args) {
    PyObject *table_obj, *order_obj, *takes_obj, *result = NULL;
    int n_takes = 0;
    Py_buffer table = {0}, order = {0}, outs[MAX_TAKES] = {{0}};
    struct take takes[MAX_TAKES];
    if (!PyArg_ParseTuple(args, "OOO:take_rows", &table_obj, &order_obj, &takes_obj)) return NULL;
    if (PyObject_GetBuffer(table_obj, &table, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (table.ndim != 2 || table.itemsize != 8 || strcmp(table.format, "d") != 0) {
        PyErr_SetString(PyExc_TypeError, "table must be a C-contiguous 2-D float64 array");
        goto done;
    }
    Py_ssize_t n_rows = table.shape[0], n_cols = table.shape[1], n = n_rows;
    const int64_t *rows = NULL;
    if (order_obj != Py_None) {
        if (PyObject_GetBuffer(order_obj, &order, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
        if (order.ndim != 1 || order.itemsize != 8 || (strcmp(order.format, "l") && strcmp(order.format, "q"))) {
            PyErr_SetString(PyExc_TypeError, "order must be a C-contiguous 1-D int64 array");
            goto done;
        }
        n = order.shape[0];
        rows = order.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (rows[i] < 0 || rows[i] >= n_rows) {
                PyErr_SetString(PyExc_IndexError, "order holds a row number out of range");
                goto done;
            }
        }
    }
    PyObject *seq = PySequence_Fast(takes_obj, "takes must be a sequence of (columns, out)");
    if (seq == NULL) goto done;
    Py_ssize_t n_given = PySequence_Fast_GET_SIZE(seq);
    if (n_given > MAX_TAKES) {
        PyErr_Format(PyExc_ValueError, "at most %d takes", MAX_TAKES);
        n_given = 0;
    }
    for (Py_ssize_t t = 0; t < n_given && !PyErr_Occurred(); t++) {
        PyObject *columns_obj, *out_obj, *columns;
        struct take *take = &takes[n_takes];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, t), "OO:take", &columns_obj, &out_obj)) break;
        if (PyObject_GetBuffer(out_obj, &outs[n_takes], PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            break;
        Py_buffer *out = &outs[n_takes++];
        columns = PySequence_Fast(columns_obj, "columns must be a sequence of integers");
        if (columns == NULL) break;
        take->out = out->buf;
        take->width = PySequence_Fast_GET_SIZE(columns);
        if (take->width > MAX_TAKE_WIDTH || out->itemsize != 8 || strcmp(out->format, "d") != 0 ||
            out->len != n * take->width * 8) {
            PyErr_SetString(PyExc_ValueError, "each out must be a float64 array of len(order) x len(columns)");
            take->width = 0;
        }
        for (Py_ssize_t k = 0; k < take->width && !PyErr_Occurred(); k++) {
            take->columns[k] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(columns, k));
            if (!PyErr_Occurred() && (take->columns[k] < 0 || take->columns[k] >= n_cols))
                PyErr_SetString(PyExc_IndexError, "column out of range");
        }
        Py_DECREF(columns);
    }
    Py_DECREF(seq);
    if (PyErr_Occurred()) goto done;
    for (int t = 0; t < n_takes; t++) {
        const struct take *take = &takes[t];
        double *out = take->out;
        for (Py_ssize_t i = 0; i < n; i++, out += take->width) {
            const double *row = (const double *)table.buf + (rows ? rows[i] : i) * n_cols;
            for (Py_ssize_t k = 0; k < take->width; k++) out[k] = row[take->columns[k]];
        }
    }
    result = Py_NewRef(Py_None);
done:
    if (table.obj) PyBuffer_Release(&table);
    if (order.obj) PyBuffer_Release(&order);
    for (int t = 0; t < n_takes; t++) PyBuffer_Release(&outs[t]);
    return result;
}

/* ------------------------------------------------------------------ id_order
 *
 * id_order(table, column, order) -> bool
 *
 * When column `column` of table (a C-contiguous (n, n_columns) float64
 * buffer) holds the integers 1..n, each once (atom ids in the usual case),
 * sets order[id - 1] = row for each row, order being a writable C-contiguous
 * int64 buffer of n entries, and returns True: order then sorts the rows by
 * id. Otherwise returns False, order undefined. (One pass, instead of the half
 * dozen numpy calls that cost more than the gather itself on 4000 atoms.)
 */
static PyObject *id_order(PyObject *self, PyObject *args) {
    PyObject *table_obj, *order_obj, *result = NULL;
    Py_ssize_t column;
    Py_buffer table = {0}, order = {0};
    if (!PyArg_ParseTuple(args, "OnO:id_order", &table_obj, &column, &order_obj)) return NULL;
    if (PyObject_GetBuffer(table_obj, &table, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (table.ndim != 2 || table.itemsize != 8 || strcmp(table.format, "d") != 0) {
        PyErr_SetString(PyExc_TypeError, "table must be a C-contiguous 2-D float64 array");
        goto done;
    }
    Py_ssize_t n = table.shape[0], n_cols = table.shape[1];
    if (PyObject_GetBuffer(order_obj, &order, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) goto done;
    if (order.ndim != 1 || order.itemsize != 8 || (strcmp(order.format, "l") && strcmp(order.format, "q")) ||
        order.shape[0] != n) {
        PyErr_SetString(PyExc_TypeError, "order must be a C-contiguous 1-D int64 array of len(table)");
        goto done;
    }
    if (column < 0 || column >= n_cols) {
        PyErr_SetString(PyExc_IndexError, "column out of range");
        goto done;
    }
    int64_t *slots = order.buf;
    for (Py_ssize_t i = 0; i < n; i++) slots[i] = -1;
    const double *id = (const double *)table.buf + column;
    int permutation = 1;
    for (Py_ssize_t row = 0; row < n && permutation; row++, id += n_cols) {
        double value = *id;
        /* non-integers and values out of range fail here, and a repeated id finds its slot taken */
        permutation = value >= 1 && value <= (double)n && value == (double)(int64_t)value &&
                      slots[(int64_t)value - 1] < 0;
        if (permutation) slots[(int64_t)value - 1] = row;
    }
    result = Py_NewRef(permutation ? Py_True : Py_False);
done:
    if (table.obj) PyBuffer_Release(&table);
    if (order.obj) PyBuffer_Release(&order);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_rows", (PyCFunction)(void (*)(void))parse_rows, METH_VARARGS | METH_KEYWORDS,
     "parse_rows(buf, pos, end, out, row, kinds=None, strings=None, threads=1) -> (row, pos, status)\n\n"
     "Parse lines of buf[pos:end] as rows of numbers into the float64 array out,\n"
     "with up to `threads` threads (see parsers/_dumpscan.c)."},
    {"start_rows", (PyCFunction)(void (*)(void))start_rows, METH_VARARGS | METH_KEYWORDS,
     "start_rows(buf, pos, end, out, row, kinds=None, strings=None, threads=1) -> Scan\n\n"
     "parse_rows started in the background: Scan.finish() waits for it and returns\n"
     "(row, pos, status) (see parsers/_dumpscan.c)."},
    {"take_rows", take_rows, METH_VARARGS,
     "take_rows(table, order, takes) -> None\n\n"
     "For each (columns, out) in takes: out[i, k] = table[order[i], columns[k]]\n"
     "(order None: the identity; see parsers/_dumpscan.c)."},
    {"id_order", id_order, METH_VARARGS,
     "id_order(table, column, order) -> bool\n\n"
     "If table[:, column] is a permutation of 1..n: order[id - 1] = row, True; else False."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_dumpscan", "Fast parsing of tables of decimal numbers into float64 arrays.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__dumpscan(void) {
    if (PyType_Ready(&ScanType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    pthread_atfork(NULL, NULL, pool_after_fork);
    if (PyModule_AddType(m, &ScanType) < 0 || PyModule_AddIntConstant(m, "DONE", STATUS_DONE) < 0 || PyModule_AddIntConstant(m, "MORE", STATUS_MORE) < 0 ||
        PyModule_AddIntConstant(m, "BAD", STATUS_BAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
