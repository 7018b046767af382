#include "lrn.h"

#include <math.h>
#include <stddef.h>

#include "threads.h"

/* Pixels per task. Each task walks all channels of one block of pixels keeping a running window
 * sum per pixel in a stack array: two updates per channel instead of n, contiguous loads, and no
 * scratch memory. (Caffe uses the same running sum.) */
#define LRN_BLOCK 256

void decaf_lrn_forward(const float *x, float *y, float *scale, int B, int C, int HW,
                       int local_size, float alpha, float beta, float k)
{
    const int before = (local_size - 1) / 2, after = local_size / 2;
    const float a = alpha / (float)local_size;
    const int blocks = (HW + LRN_BLOCK - 1) / LRN_BLOCK;
    const ptrdiff_t tasks = (ptrdiff_t)B * blocks;

    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(tasks * LRN_BLOCK * C * 4))
    for (ptrdiff_t t = 0; t < tasks; ++t) {
        const ptrdiff_t b = t / blocks;
        const int p0 = (int)(t % blocks) * LRN_BLOCK;
        const int np = HW - p0 < LRN_BLOCK ? HW - p0 : LRN_BLOCK;
        const ptrdiff_t base = b * C * HW + p0; /* x[b, 0, p0] */
        float sum[LRN_BLOCK];

        /* Prime with channels [0, after): the loop adds channel c + after before using the sum. */
        for (int p = 0; p < np; ++p) sum[p] = 0.0f;
        for (int c = 0; c < after && c < C; ++c) {
            const float *xc = x + base + (ptrdiff_t)c * HW;
            for (int p = 0; p < np; ++p) sum[p] += xc[p] * xc[p];
        }
        for (int c = 0; c < C; ++c) {
            if (c + after < C) {
                const float *xa = x + base + (ptrdiff_t)(c + after) * HW;
                for (int p = 0; p < np; ++p) sum[p] += xa[p] * xa[p];
            }
            if (c - before - 1 >= 0) {
                const float *xs = x + base + (ptrdiff_t)(c - before - 1) * HW;
                for (int p = 0; p < np; ++p) sum[p] -= xs[p] * xs[p];
            }
            const ptrdiff_t off = base + (ptrdiff_t)c * HW;
            for (int p = 0; p < np; ++p) scale[off + p] = k + a * sum[p];
            if (beta == 0.75f) {
                /* s^-0.75 = 1 / (sqrt(s) * sqrt(sqrt(s))): vectorises, unlike powf (AlexNet's beta) */
                for (int p = 0; p < np; ++p) {
                    const float r = sqrtf(scale[off + p]);
                    y[off + p] = x[off + p] / (r * sqrtf(r));
                }
            } else {
                for (int p = 0; p < np; ++p) y[off + p] = x[off + p] * powf(scale[off + p], -beta);
            }
        }
    }
}

void decaf_lrn_backward(const float *x, const float *y, const float *scale, const float *dy, float *dx,
                        int B, int C, int HW, int local_size, float alpha, float beta)
{
    /* Mirror of the forward window: channel c receives from c' in [c - after, c + before]. */
    const int before = (local_size - 1) / 2, after = local_size / 2;
    const float coef = 2.0f * alpha * beta / (float)local_size;
    const int blocks = (HW + LRN_BLOCK - 1) / LRN_BLOCK;
    const ptrdiff_t tasks = (ptrdiff_t)B * blocks;

    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(tasks * LRN_BLOCK * C * 8))
    for (ptrdiff_t t = 0; t < tasks; ++t) {
        const ptrdiff_t b = t / blocks;
        const int p0 = (int)(t % blocks) * LRN_BLOCK;
        const int np = HW - p0 < LRN_BLOCK ? HW - p0 : LRN_BLOCK;
        const ptrdiff_t base = b * C * HW + p0;
        float sum[LRN_BLOCK]; /* running sum of r[c'] = dy[c'] * y[c'] / scale[c'] */

        for (int p = 0; p < np; ++p) sum[p] = 0.0f;
        for (int c = 0; c < before && c < C; ++c) {
            const ptrdiff_t o = base + (ptrdiff_t)c * HW;
            for (int p = 0; p < np; ++p) sum[p] += dy[o + p] * y[o + p] / scale[o + p];
        }
        for (int c = 0; c < C; ++c) {
            if (c + before < C) {
                const ptrdiff_t o = base + (ptrdiff_t)(c + before) * HW;
                for (int p = 0; p < np; ++p) sum[p] += dy[o + p] * y[o + p] / scale[o + p];
            }
            if (c - after - 1 >= 0) {
                const ptrdiff_t o = base + (ptrdiff_t)(c - after - 1) * HW;
                for (int p = 0; p < np; ++p) sum[p] -= dy[o + p] * y[o + p] / scale[o + p];
            }
            const ptrdiff_t off = base + (ptrdiff_t)c * HW;
            if (beta == 0.75f) {
                for (int p = 0; p < np; ++p) {
                    const float r = sqrtf(scale[off + p]);
                    dx[off + p] = dy[off + p] / (r * sqrtf(r)) - coef * x[off + p] * sum[p];
                }
            } else {
                for (int p = 0; p < np; ++p)
                    dx[off + p] = dy[off + p] * powf(scale[off + p], -beta) - coef * x[off + p] * sum[p];
            }
        }
    }
}
