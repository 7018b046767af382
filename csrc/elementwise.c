#include "elementwise.h"

#include <math.h>

#include "threads.h"

ptrdiff_t decaf_copy_count_nonfinite(const float *restrict src, float *restrict dst, ptrdiff_t n)
{
    ptrdiff_t bad = 0;
    #pragma omp parallel for simd schedule(static) reduction(+ : bad) num_threads(decaf_threads_for(n / 4))
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = src[i];
        dst[i] = v;
        bad += !isfinite(v);
    }
    return bad;
}

/* A memory-bound pass (3 arrays read, 2 written): threads from 64k values on. */
void decaf_sgd_step(float *restrict w, float *restrict v, const float *restrict g, ptrdiff_t n, float lr, float mu,
                    float decay, float scale, int nesterov)
{
    const float ahead = 1.0f + mu;
    #pragma omp parallel for simd schedule(static) num_threads(decaf_threads_for(n / 4))
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float step = scale * g[i] + decay * w[i];
        const float old = v[i], now = mu * old + lr * step;
        v[i] = now;
        w[i] -= nesterov ? ahead * now - mu * old : now;
    }
}

/* erf, branch-free so that GCC vectorises the loop (both formulas are computed, one is kept):
 *   |x| < 0.5: its Taylor series, 2 / sqrt(pi) (x - x^3 / 3 + x^5 / 10 - x^7 / 42 + x^9 / 216
 *              - x^11 / 1320 + x^13 / 9360): the next term below 2e-9 of erf(x);
 *   else:      1 - erfc(|x|), erfc(z) = t exp(-z^2 + P(t)) with t = 1 / (1 + z / 2) and P the
 *              degree-9 polynomial of the Chebyshev fit in Numerical Recipes ("erfcc": fractional
 *              error below 1.2e-7), the sign of x put back.
 * A NaN gives NaN (it passes through the Taylor arm, which the select keeps for a NaN). */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
/* (multiply-adds fused: the polynomials' chains of dependent steps are what these loops wait for;
 * activation.h is read here so that decaf_exp_poly is compiled with the same options, else GCC
 * would not inline it into the loops) */
#include "activation.h"   /* decaf_exp_poly, decaf_erfc_fit, decaf_act_gelu */

static inline float erf_one(float v)
{
    const float z = fabsf(v), s2 = v * v;
    float p = -1.0f / 9360.0f;                                /* the series in x^2, times x */
    p = p * s2 + 1.0f / 1320.0f;
    p = p * s2 - 1.0f / 216.0f;
    p = p * s2 + 1.0f / 42.0f;
    p = p * s2 - 1.0f / 10.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 - 1.0f;
    const float series = -1.1283791671f * v * p;             /* 2 / sqrt(pi) x (1 - x^2 / 3 + ...) */
    const float tail = 1.0f - decaf_erfc_fit(z);
    const float signed_tail = v < 0.0f ? -tail : tail;
    return z < 0.5f || z != z ? series : signed_tail;
}

/* A compute-bound pass (about 40 operations a value): threads from 8k values on. */
void decaf_erf(const float *x, float *y, ptrdiff_t n)
{
    #pragma omp parallel for simd schedule(static) num_threads(decaf_threads_for(n * 4))
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = erf_one(x[i]);
}

/* activation.h's GELU over runs of GELU_RUN values per task (about 40 operations a value: threads
 * from 8k values on). */
enum { GELU_RUN = 4096 };

void decaf_gelu(const float *x, float *y, ptrdiff_t n)
{
    const ptrdiff_t runs = (n + GELU_RUN - 1) / GELU_RUN;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(n * 4))
    for (ptrdiff_t r = 0; r < runs; ++r) {
        const ptrdiff_t i = r * GELU_RUN;
        decaf_act_gelu(y + i, x + i, n - i < GELU_RUN ? n - i : GELU_RUN);
    }
}
#pragma GCC pop_options

enum { TRANSPOSE_TILE = 32 };

void decaf_transpose(const float *restrict x, float *restrict y, ptrdiff_t B, ptrdiff_t M, ptrdiff_t N)
{
    const ptrdiff_t bands = (M + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE, tasks = B * bands;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(B * M * N / 4))
    for (ptrdiff_t task = 0; task < tasks; ++task) {
        const ptrdiff_t b = task / bands, m0 = task % bands * TRANSPOSE_TILE;
        const ptrdiff_t m1 = m0 + TRANSPOSE_TILE < M ? m0 + TRANSPOSE_TILE : M;
        const float *xb = x + b * M * N;
        float *yb = y + b * M * N;
        for (ptrdiff_t n0 = 0; n0 < N; n0 += TRANSPOSE_TILE) {
            const ptrdiff_t n1 = n0 + TRANSPOSE_TILE < N ? n0 + TRANSPOSE_TILE : N;
            for (ptrdiff_t n = n0; n < n1; ++n)          /* a row of y's tile: a column of x's */
                for (ptrdiff_t m = m0; m < m1; ++m)
                    yb[n * M + m] = xb[m * N + n];
        }
    }
}
