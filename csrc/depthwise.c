#include "depthwise.h"

#include <stddef.h>

#include "im2col.h" /* decaf_valid_outputs: the same window geometry as im2col */
#include "threads.h"

/* All loops run over the kernel offsets (i, j) outside and the output pixels inside, so the
 * innermost loop walks an output row contiguously and needs no bounds test: the valid (oh, ow)
 * ranges for each offset are computed once. */

void decaf_depthwise_conv_forward(const float *x, const float *w, float *y, int B, int C, int H, int W,
                                  int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top, int pad_left,
                                  int dil_h, int dil_w)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        const float *xp = x + bc * H * W;
        const float *wc = w + (bc % C) * kh * kw;
        float *yp = y + bc * Ho * Wo;
        for (int p = 0; p < Ho * Wo; ++p) yp[p] = 0.0f;

        for (int i = 0; i < kh; ++i) {
            const int hoff = i * dil_h - pad_top;
            int oh_lo, oh_hi;
            decaf_valid_outputs(hoff, sh, H, Ho, &oh_lo, &oh_hi);
            for (int j = 0; j < kw; ++j) {
                const int woff = j * dil_w - pad_left;
                int ow_lo, ow_hi;
                decaf_valid_outputs(woff, sw, W, Wo, &ow_lo, &ow_hi);
                const float wv = wc[i * kw + j];
                for (int oh = oh_lo; oh < oh_hi; ++oh) {
                    const float *row = xp + (ptrdiff_t)(oh * sh + hoff) * W;
                    float *out = yp + oh * Wo;
                    for (int ow = ow_lo; ow < ow_hi; ++ow) out[ow] += wv * row[ow * sw + woff];
                }
            }
        }
    }
}

void decaf_depthwise_conv_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                                   int B, int C, int H, int W, int kh, int kw, int Ho, int Wo,
                                   int sh, int sw, int pad_top, int pad_left, int dil_h, int dil_w)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    const ptrdiff_t work = planes * Ho * Wo * kh * kw;

    /* Input gradient: one (b, c) plane per task, so the scatter into dx has no races. */
    if (dx) {
        #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(work))
        for (ptrdiff_t bc = 0; bc < planes; ++bc) {
            float *dxp = dx + bc * H * W;
            const float *wc = w + (bc % C) * kh * kw;
            const float *dyp = dy + bc * Ho * Wo;
            for (int p = 0; p < H * W; ++p) dxp[p] = 0.0f;

            for (int i = 0; i < kh; ++i) {
                const int hoff = i * dil_h - pad_top;
                int oh_lo, oh_hi;
                decaf_valid_outputs(hoff, sh, H, Ho, &oh_lo, &oh_hi);
                for (int j = 0; j < kw; ++j) {
                    const int woff = j * dil_w - pad_left;
                    int ow_lo, ow_hi;
                    decaf_valid_outputs(woff, sw, W, Wo, &ow_lo, &ow_hi);
                    const float wv = wc[i * kw + j];
                    for (int oh = oh_lo; oh < oh_hi; ++oh) {
                        float *row = dxp + (ptrdiff_t)(oh * sh + hoff) * W;
                        const float *g = dyp + oh * Wo;
                        for (int ow = ow_lo; ow < ow_hi; ++ow) row[ow * sw + woff] += wv * g[ow];
                    }
                }
            }
        }
    }

    /* Weight gradient: one channel per task (it sums over the batch), accumulated in double
     * because one weight gathers B*Ho*Wo products. */
    if (dw) {
        #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(work))
        for (int c = 0; c < C; ++c) {
            for (int i = 0; i < kh; ++i) {
                const int hoff = i * dil_h - pad_top;
                int oh_lo, oh_hi;
                decaf_valid_outputs(hoff, sh, H, Ho, &oh_lo, &oh_hi);
                for (int j = 0; j < kw; ++j) {
                    const int woff = j * dil_w - pad_left;
                    int ow_lo, ow_hi;
                    decaf_valid_outputs(woff, sw, W, Wo, &ow_lo, &ow_hi);
                    double acc = 0.0;
                    for (int b = 0; b < B; ++b) {
                        const ptrdiff_t bc = (ptrdiff_t)b * C + c;
                        const float *xp = x + bc * H * W;
                        const float *dyp = dy + bc * Ho * Wo;
                        for (int oh = oh_lo; oh < oh_hi; ++oh) {
                            const float *row = xp + (ptrdiff_t)(oh * sh + hoff) * W;
                            const float *g = dyp + oh * Wo;
                            /* a float partial per row, so the inner loop can vectorise */
                            float s = 0.0f;
                            #pragma omp simd reduction(+ : s)
                            for (int ow = ow_lo; ow < ow_hi; ++ow) s += g[ow] * row[ow * sw + woff];
                            acc += s;
                        }
                    }
                    dw[((ptrdiff_t)c * kh + i) * kw + j] = (float)acc;
                }
            }
        }
    }
}
