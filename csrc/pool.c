#include "pool.h"

#include <math.h>
#include <stddef.h>

#include "threads.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Every loop below takes one (b, c) plane per task: planes are independent, so backward passes
 * can add into dx without races. */

void decaf_max_pool_forward(const float *x, float *y, int *argmax, int B, int C, int H, int W,
                            int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        const float *xp = x + bc * H * W;
        float *yp = y + bc * Ho * Wo;
        int *ap = argmax + bc * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
            const int hs = imax(oh * sh - pad_top, 0), he = imin(oh * sh - pad_top + kh, H);
            for (int ow = 0; ow < Wo; ++ow) {
                const int ws = imax(ow * sw - pad_left, 0), we = imin(ow * sw - pad_left + kw, W);
                float m = -INFINITY;
                int best = -1;
                for (int h = hs; h < he; ++h)
                    for (int w = ws; w < we; ++w) {
                        const float v = xp[h * W + w];
                        /* best < 0 takes the first real pixel even if it is -inf or NaN. */
                        if (best < 0 || v > m) {
                            m = v;
                            best = h * W + w;
                        }
                    }
                yp[oh * Wo + ow] = m;
                ap[oh * Wo + ow] = best;
            }
        }
    }
}

/* max(m, v) that lets a NaN through from either side. */
static inline float max_nan(float m, float v) { return ((v > m) | (v != v)) ? v : m; }

void decaf_max_pool_values(const float *x, float *y, int B, int C, int H, int W,
                           int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    /* columns past the image that the last window reaches (they hold -inf, like the left padding) */
    const int right = imax((Wo - 1) * sw + kw - pad_left - W, 0);
    #pragma omp parallel num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    {
        /* buf = [pad_left x -inf | max over the window's rows, per input column | right x -inf] */
        float buf[pad_left + W + right];
        float *colmax = buf + pad_left;
        for (int w = 0; w < pad_left; ++w) buf[w] = -INFINITY;
        for (int w = 0; w < right; ++w) colmax[W + w] = -INFINITY;
        #pragma omp for schedule(static)
        for (ptrdiff_t bc = 0; bc < planes; ++bc) {
            const float *xp = x + bc * H * W;
            for (int oh = 0; oh < Ho; ++oh) {
                const int hs = imax(oh * sh - pad_top, 0), he = imin(oh * sh - pad_top + kh, H);
                for (int w = 0; w < W; ++w) colmax[w] = -INFINITY;
                for (int h = hs; h < he; ++h) {       /* contiguous: vectorised */
                    const float *row = xp + (ptrdiff_t)h * W;
                    for (int w = 0; w < W; ++w) colmax[w] = max_nan(colmax[w], row[w]);
                }
                /* then over the window's columns, for all outputs of the row at once (buf[ow * sw + j]
                 * is column ow * sw - pad_left + j of the image) */
                float *yr = y + bc * Ho * Wo + (ptrdiff_t)oh * Wo;
                for (int ow = 0; ow < Wo; ++ow) yr[ow] = buf[ow * sw];
                for (int j = 1; j < kw; ++j)
                    for (int ow = 0; ow < Wo; ++ow) yr[ow] = max_nan(yr[ow], buf[ow * sw + j]);
            }
        }
    }
}

void decaf_max_pool_backward(const float *dy, const int *argmax, float *dx, int B, int C, int H, int W,
                             int Ho, int Wo)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    const int plane_in = H * W, plane_out = Ho * Wo;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * (plane_in + plane_out)))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        float *dxp = dx + bc * plane_in;
        const float *dyp = dy + bc * plane_out;
        const int *ap = argmax + bc * plane_out;
        for (int p = 0; p < plane_in; ++p) dxp[p] = 0.0f;
        for (int o = 0; o < plane_out; ++o) {
            const int a = ap[o];
            if (a >= 0 && a < plane_in) dxp[a] += dyp[o];
        }
    }
}

/* The window of one output along one axis: [*s, *e) clipped to the real image, and the divisor
 * factor. With count_include_pad the window is clipped only to the padded image [-pad, size + pad_end),
 * so a window hanging past it (ceil mode) counts only its part inside. */
static inline int window(int o, int stride, int k, int pad, int pad_end, int size, int count_include_pad,
                         int *s, int *e)
{
    const int start = o * stride - pad;
    const int end_padded = imin(start + k, size + pad_end);
    *s = imax(start, 0);
    *e = imin(start + k, size);
    return imax(count_include_pad ? end_padded - start : *e - *s, 0);
}

void decaf_avg_pool_forward(const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,
                            int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                            int pad_bottom, int pad_right, int count_include_pad)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        const float *xp = x + bc * H * W;
        float *yp = y + bc * Ho * Wo;
        for (int oh = 0; oh < Ho; ++oh) {
            int hs, he;
            const int nh = window(oh, sh, kh, pad_top, pad_bottom, H, count_include_pad, &hs, &he);
            for (int ow = 0; ow < Wo; ++ow) {
                int ws, we;
                const int nw = window(ow, sw, kw, pad_left, pad_right, W, count_include_pad, &ws, &we);
                float sum = 0.0f;
                for (int h = hs; h < he; ++h)
                    for (int w = ws; w < we; ++w) sum += xp[h * W + w];
                yp[oh * Wo + ow] = nh * nw > 0 ? sum / (float)(nh * nw) : 0.0f;
            }
        }
    }
}

void decaf_avg_pool_backward(const float *dy, float *dx, int B, int C, int H, int W, int Ho, int Wo,
                             int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                             int pad_bottom, int pad_right, int count_include_pad)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        float *dxp = dx + bc * H * W;
        const float *dyp = dy + bc * Ho * Wo;
        for (int p = 0; p < H * W; ++p) dxp[p] = 0.0f;
        for (int oh = 0; oh < Ho; ++oh) {
            int hs, he;
            const int nh = window(oh, sh, kh, pad_top, pad_bottom, H, count_include_pad, &hs, &he);
            for (int ow = 0; ow < Wo; ++ow) {
                int ws, we;
                const int nw = window(ow, sw, kw, pad_left, pad_right, W, count_include_pad, &ws, &we);
                if (nh * nw <= 0) continue;
                const float g = dyp[oh * Wo + ow] / (float)(nh * nw);
                for (int h = hs; h < he; ++h)
                    for (int w = ws; w < we; ++w) dxp[h * W + w] += g;
            }
        }
    }
}
