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
#include "activation.h"   /* decaf_exp_poly */

/* erfc(z) for z >= 0 by the fit above (good to 1.2e-7 relative for every z >= 0; erf_one uses it
 * from 0.5 on); 0 for z = inf (t = 0 and the exponential underflows to 0). */
static inline float erfc_fit(float z)
{
    const float t = 1.0f / (1.0f + 0.5f * z), t2 = t * t, t4 = t2 * t2;
    /* P(t) = -1.26551223 + 1.00002368 t + ... + 0.17087277 t^9 by Estrin's scheme (pairs, then
     * pairs of pairs): a chain of 4 multiply-adds after t^4 where Horner's rule has 9 */
    const float p01 = -1.26551223f + 1.00002368f * t, p23 = 0.37409196f + 0.09678418f * t;
    const float p45 = -0.18628806f + 0.27886807f * t, p67 = -1.13520398f + 1.48851587f * t;
    const float p89 = -0.82215223f + 0.17087277f * t;
    const float q = (p01 + p23 * t2) + (p45 + p67 * t2) * t4 + p89 * (t4 * t4);
    return t * decaf_exp_poly(q - z * z);
}

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
    const float tail = 1.0f - erfc_fit(z);
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

/* GELU, x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2, from erf_one's erfc
 * fit alone: with z = |x| / sqrt 2, Phi = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 for x >= 0.
 * The fit holds for every z >= 0 (1.2e-7 relative), so there is no series arm to compute and
 * discard: Phi within about 1e-7 absolute near 0 (GELU(x) = x Phi within 1e-7 |x|, as the series
 * would give it) and within a few 1e-6 relative in the lower tail, where 1 + erf would have
 * cancelled down to erf's absolute error. Once Phi is 0 (x below about -13.2, where x Phi is
 * below 1e-38) the result is -0 directly, so that x = -inf gives -0 rather than -inf times 0;
 * inf gives inf, a NaN NaN (Phi is NaN, not 0). */
static inline float gelu_one(float v)
{
    const float half_tail = 0.5f * erfc_fit(fabsf(v) * 0.70710678118654752f);
    const float phi = v < 0.0f ? half_tail : 1.0f - half_tail;
    return phi == 0.0f ? -0.0f : v * phi;
}

#if defined(__AVX2__) && defined(__FMA__)
/* gelu_one on 8 lanes, step for step, with activation.h's decaf_exp_poly8 (GCC's vectorisation of
 * the scalar code ran at about 2 ns a value here, latency-bound on the polynomials' chains). */
static inline __m256 gelu8(__m256 v)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(0.70710678118654752f));
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), one));
    const __m256 t2 = _mm256_mul_ps(t, t), t4 = _mm256_mul_ps(t2, t2);
    const __m256 p01 = _mm256_fmadd_ps(_mm256_set1_ps(1.00002368f), t, _mm256_set1_ps(-1.26551223f));
    const __m256 p23 = _mm256_fmadd_ps(_mm256_set1_ps(0.09678418f), t, _mm256_set1_ps(0.37409196f));
    const __m256 p45 = _mm256_fmadd_ps(_mm256_set1_ps(0.27886807f), t, _mm256_set1_ps(-0.18628806f));
    const __m256 p67 = _mm256_fmadd_ps(_mm256_set1_ps(1.48851587f), t, _mm256_set1_ps(-1.13520398f));
    const __m256 p89 = _mm256_fmadd_ps(_mm256_set1_ps(0.17087277f), t, _mm256_set1_ps(-0.82215223f));
    const __m256 q = _mm256_add_ps(_mm256_add_ps(_mm256_fmadd_ps(p23, t2, p01),
                                                 _mm256_mul_ps(_mm256_fmadd_ps(p67, t2, p45), t4)),
                                   _mm256_mul_ps(p89, _mm256_mul_ps(t4, t4)));
    const __m256 half_tail = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t),
                                           decaf_exp_poly8(_mm256_fnmadd_ps(z, z, q)));
    const __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(one, half_tail), half_tail, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    return _mm256_blendv_ps(_mm256_mul_ps(v, phi), _mm256_set1_ps(-0.0f), _mm256_cmp_ps(phi, zero, _CMP_EQ_OQ));
}
#endif

void decaf_gelu(const float *x, float *y, ptrdiff_t n)
{
    ptrdiff_t done = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const ptrdiff_t pairs = n / 16;           /* two vectors at a time: each one's chain is long */
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(n * 4))
    for (ptrdiff_t b = 0; b < pairs; ++b) {
        const ptrdiff_t i = 16 * b;
        const __m256 y0 = gelu8(_mm256_loadu_ps(x + i)), y1 = gelu8(_mm256_loadu_ps(x + i + 8));
        _mm256_storeu_ps(y + i, y0);
        _mm256_storeu_ps(y + i + 8, y1);
    }
    done = 16 * pairs;
#endif
    #pragma omp parallel for simd schedule(static) num_threads(decaf_threads_for((n - done) * 4))
    for (ptrdiff_t i = done; i < n; ++i)
        y[i] = gelu_one(x[i]);
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
