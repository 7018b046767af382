#include "depthwise.h"

#include <stddef.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "im2col.h" /* decaf_valid_outputs: the same window geometry as im2col */
#include "threads.h"

/* All loops run over the kernel offsets (i, j) outside and the output pixels inside, so the
 * innermost loop walks an output row contiguously and needs no bounds test: the valid (oh, ow)
 * ranges for each offset are computed once. */

#ifdef __AVX512F__
/* 16 floats of an input row from column c0, 0 in the lanes outside [0, W). A plain load and a
 * blend where the 16 floats lie inside the array [begin, end): masked loads are slow on this
 * machine (see pool.c); a masked load only at the array's very ends. */
static inline __m512 load_row16_zero(const float *row, int c0, int W, const float *begin, const float *end)
{
    if (c0 >= 0 && c0 + 16 <= W)
        return _mm512_loadu_ps(row + c0);
    const int lo = c0 < 0 ? -c0 : 0, hi = W - c0 < 16 ? W - c0 : 16;
    const __mmask16 keep = hi > lo ? (__mmask16)(((1u << (hi - lo)) - 1) << lo) : 0;
    if (row + c0 >= begin && row + c0 + 16 <= end)
        return _mm512_maskz_mov_ps(keep, _mm512_loadu_ps(row + c0));
    return _mm512_maskz_loadu_ps(keep, row + c0);
}

/* One output row of one channel, 16 outputs per vector, for strides 1 and 2 (stride 2: two loads
 * and a permute keeping the even columns). Taps outside the image read zeros. */
static void depthwise_row16(const float *xp, const float *wc, float bias, float relu, float *yr, int H, int W,
                            int kh, int kw, int Wo, int sh, int sw, int pad_top, int pad_left, int dil_h, int oh,
                            const float *begin, const float *end)
{
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int ow0 = 0; ow0 < Wo; ow0 += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < kh; ++i) {
            const int h = oh * sh + i * dil_h - pad_top;
            if (h < 0 || h >= H)
                continue;                              /* a row of padding adds nothing */
            const float *row = xp + (ptrdiff_t)h * W;
            for (int j = 0; j < kw; ++j) {
                const int c0 = ow0 * sw + j - pad_left;   /* input column of lane 0 */
                const __m512 v = sw == 1 ? load_row16_zero(row, c0, W, begin, end)
                                         : _mm512_permutex2var_ps(load_row16_zero(row, c0, W, begin, end), evens,
                                                                  load_row16_zero(row, c0 + 16, W, begin, end));
                /* multiply, then add (not an FMA): the same roundings, in the same order, as the
                 * scalar loop and the NumPy reference, so the results are identical */
                acc = _mm512_add_ps(acc, _mm512_mul_ps(v, _mm512_set1_ps(wc[i * kw + j])));
            }
        }
        acc = _mm512_add_ps(acc, _mm512_set1_ps(bias));
        if (relu > 0.0f) {   /* min(max(acc, 0), relu), keeping NaN: lanes below 0 -> 0, above relu -> relu */
            acc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(acc, _mm512_setzero_ps(), _CMP_LT_OQ), acc, _mm512_setzero_ps());
            acc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(acc, _mm512_set1_ps(relu), _CMP_GT_OQ), acc, _mm512_set1_ps(relu));
        }
        const int n = Wo - ow0 < 16 ? Wo - ow0 : 16;
        if (n == 16)
            _mm512_storeu_ps(yr + ow0, acc);
        else
            _mm512_mask_storeu_ps(yr + ow0, (__mmask16)((1u << n) - 1), acc);
    }
}
#endif

void decaf_depthwise_conv_forward(const float *x, const float *w, const float *bias, float *y, int B, int C,
                                  int H, int W, int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top,
                                  int pad_left, int dil_h, int dil_w, float relu)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
#ifdef __AVX512F__
    if (sw <= 2 && dil_w == 1) {   /* MobileNet / EfficientNet's depthwise layers: 16 outputs per vector */
        const float *end = x + planes * H * W;
        #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
        for (ptrdiff_t bc = 0; bc < planes; ++bc)
            for (int oh = 0; oh < Ho; ++oh)
                depthwise_row16(x + bc * H * W, w + (bc % C) * kh * kw, bias ? bias[bc % C] : 0.0f, relu,
                                y + bc * Ho * Wo + (ptrdiff_t)oh * Wo, H, W, kh, kw, Wo, sh, sw, pad_top, pad_left,
                                dil_h, oh, x, end);
        return;
    }
#endif
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
        const float b = bias ? bias[bc % C] : 0.0f;
        for (int p = 0; p < Ho * Wo; ++p) {
            const float v = yp[p] + b;
            yp[p] = relu > 0.0f ? (v < 0.0f ? 0.0f : (v > relu ? relu : v)) : v;
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
