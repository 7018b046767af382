#include "layernorm.h"

#include <math.h>
#include <string.h>

#include "threads.h"

/* Numerics. The sums run in float, shifted by the vector's first value k = x[o, 0, i]:
 * s = sum(x - k) and ms = s / C, then q = sum(((x - k) - ms)^2) in a second pass (two passes: no
 * sum of squares to cancel), and y = ((x - k) - ms) inv_std gamma + beta. x - k is exact when x is
 * within a factor 2 of k (and otherwise rounded relative to the spread of the values), so neither
 * the sums nor y lose digits to a large common offset (values about 1e3 with a spread of 1): the
 * mean is only rounded where it is stored, k + ms.
 *
 * inner > 1 (the channels of NCHW): the C values of a position are inner floats apart, and
 * neighbouring positions are neighbours in memory. A chunk of up to CHUNK_MAX positions is done
 * at once: for each c the chunk's row of x is a contiguous run, so the sums of all the chunk's
 * positions go along it in vector lanes (k, the sums and inv_std live in arrays of the chunk's
 * width). Its C rows (at most CHUNK_BYTES) stay in the level-2 cache for the three passes (sums,
 * squares, output), so x comes from memory once. Threads take (outer, chunk) tasks.
 * Chunk widths: as wide as CHUNK_BYTES allows (runs of 128 floats and more per row came from
 * memory about twice as fast at batch 16 as runs of 32: Zen 3, (16, 192, 28, 28)), and multiples
 * of 16 floats (a cache line) when inner is split, so that two threads' chunks share no line
 * where inner is a multiple of 16.
 * inner = 1 (rows of C values): each row on its own, vectorised along C. */

enum { CHUNK_MAX = 256, CHUNK_BYTES = 98304 };

static ptrdiff_t chunk_width(ptrdiff_t C, ptrdiff_t inner)
{
    ptrdiff_t w = CHUNK_BYTES / (ptrdiff_t)sizeof(float) / C;
    w = w < 16 ? 16 : w > CHUNK_MAX ? CHUNK_MAX : w;
    if (inner <= w)
        return inner;
    const ptrdiff_t chunks = (inner + w - 1) / w;
    w = (inner + chunks - 1) / chunks;                  /* as even as the chunks can be, */
    return (w + 15) / 16 * 16;                          /* in whole lines (at most CHUNK_MAX still) */
}

/* The sums over c go by blocks of SUM_BLOCK rows into part[] first, then part into the total: a
 * float sum of C terms then rounds like one of about SUM_BLOCK + C / SUM_BLOCK terms (C = 768: 56
 * instead of 768), for one more pass over part per block. */
enum { SUM_BLOCK = 32 };

/* One chunk of w positions: x, y at (o, 0, i0); mean, inv_std at (o, i0). */
static void normalise_chunk(const float *x, const float *restrict gamma, const float *restrict beta, float *y,
                            float *restrict mean, float *restrict inv_std, ptrdiff_t C, ptrdiff_t inner,
                            ptrdiff_t w, float eps)
{
    float k[CHUNK_MAX], s[CHUNK_MAX], r[CHUNK_MAX], part[CHUNK_MAX];
    const float per = 1.0f / (float)C;
    memcpy(k, x, (size_t)w * sizeof(float));
    for (ptrdiff_t j = 0; j < w; ++j)
        s[j] = r[j] = 0.0f;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += SUM_BLOCK) {   /* s = sum(x - k) */
        const ptrdiff_t c1 = C - c0 < SUM_BLOCK ? C : c0 + SUM_BLOCK;
        memset(part, 0, (size_t)w * sizeof(float));
        for (ptrdiff_t c = c0; c < c1; ++c) {
            const float *restrict row = x + c * inner;
            #pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j)
                part[j] += row[j] - k[j];
        }
        #pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j)
            s[j] += part[j];
    }
    #pragma omp simd
    for (ptrdiff_t j = 0; j < w; ++j)
        s[j] *= per;                                    /* ms: the mean minus k */
    for (ptrdiff_t c0 = 0; c0 < C; c0 += SUM_BLOCK) {   /* r = sum(((x - k) - ms)^2) */
        const ptrdiff_t c1 = C - c0 < SUM_BLOCK ? C : c0 + SUM_BLOCK;
        memset(part, 0, (size_t)w * sizeof(float));
        for (ptrdiff_t c = c0; c < c1; ++c) {
            const float *restrict row = x + c * inner;
            #pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j) {
                const float d = (row[j] - k[j]) - s[j];
                part[j] += d * d;
            }
        }
        #pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j)
            r[j] += part[j];
    }
    #pragma omp simd
    for (ptrdiff_t j = 0; j < w; ++j) {
        r[j] = 1.0f / sqrtf(r[j] * per + eps);
        mean[j] = k[j] + s[j];
        inv_std[j] = r[j];
    }
    for (ptrdiff_t c = 0; c < C; ++c) {                 /* y may be x: each value read, then written */
        const float *row = x + c * inner;
        float *out = y + c * inner;
        const float g = gamma[c], b = beta[c];
        #pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j)
            out[j] = ((row[j] - k[j]) - s[j]) * (r[j] * g) + b;
    }
}

/* One row of C values (inner = 1). */
static void normalise_row(const float *x, const float *restrict gamma, const float *restrict beta, float *y,
                          float *mean, float *inv_std, ptrdiff_t C, float eps)
{
    const float k = x[0], per = 1.0f / (float)C;
    float s = 0.0f, q = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (ptrdiff_t c = 0; c < C; ++c)
        s += x[c] - k;
    const float ms = s * per;
    #pragma omp simd reduction(+ : q)
    for (ptrdiff_t c = 0; c < C; ++c) {
        const float d = (x[c] - k) - ms;
        q += d * d;
    }
    const float r = 1.0f / sqrtf(q * per + eps);
    *mean = k + ms;
    *inv_std = r;
    #pragma omp simd
    for (ptrdiff_t c = 0; c < C; ++c)
        y[c] = ((x[c] - k) - ms) * (r * gamma[c]) + beta[c];
}

void decaf_layernorm(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *inv_std,
                     ptrdiff_t outer, ptrdiff_t C, ptrdiff_t inner, float eps)
{
    const int threads = decaf_threads_for(outer * C * inner * 4);   /* about 12 operations a value */
    if (inner == 1) {
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (ptrdiff_t o = 0; o < outer; ++o)
            normalise_row(x + o * C, gamma, beta, y + o * C, mean + o, inv_std + o, C, eps);
        return;
    }
    const ptrdiff_t w = chunk_width(C, inner), chunks = (inner + w - 1) / w, tasks = outer * chunks;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (ptrdiff_t task = 0; task < tasks; ++task) {
        const ptrdiff_t o = task / chunks, i0 = task % chunks * w, n = inner - i0 < w ? inner - i0 : w;
        const ptrdiff_t at = o * C * inner + i0;
        normalise_chunk(x + at, gamma, beta, y + at, mean + o * inner + i0, inv_std + o * inner + i0, C, inner, n,
                        eps);
    }
}
