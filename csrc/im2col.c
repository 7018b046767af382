#include "im2col.h"

#include <stddef.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "threads.h"

/* One output row of im2col: d[ow] = src[ow * sw] for ow in [lo, hi) (src[ow * sw] is the input
 * pixel output ow reads; it is only read there), 0 for the other ow in [0, Wo).
 * With AVX-512 and stride 1, each run of 16 outputs is one load whose lanes in the padding are
 * zeroed (masked-off lanes are not read, so nothing outside the input is touched). A short row
 * (CaffeNet's conv3-5: 13 pixels) is one masked load and store, without branches. In a longer
 * row (conv2: 27) full runs use plain loads, and the store is a plain 16-float one as long as
 * it ends before d_end: the rest of this cols row, which this thread writes later anyway. */
static inline void copy_row(float *restrict d, const float *restrict src, int Wo, int lo, int hi, int sw,
                            const float *d_end)
{
#ifdef __AVX512F__
    if (sw == 1) {
        for (int ow = 0; ow < Wo; ow += 16) {
            const int n = Wo - ow < 16 ? Wo - ow : 16;
            const int a = lo - ow > 0 ? lo - ow : 0, b = hi - ow < n ? hi - ow : n;   /* valid lanes [a, b) */
            const __mmask16 keep = b > a ? (__mmask16)(((1u << (b - a)) - 1) << a) : 0;
            if (Wo <= 16) {
                _mm512_mask_storeu_ps(d, (__mmask16)((1u << n) - 1), _mm512_maskz_loadu_ps(keep, src));
                return;
            }
            const __m512 v = keep == 0xFFFF ? _mm512_loadu_ps(src + ow) : _mm512_maskz_loadu_ps(keep, src + ow);
            if (d + ow + 16 <= d_end)
                _mm512_storeu_ps(d + ow, v);
            else
                _mm512_mask_storeu_ps(d + ow, (__mmask16)((1u << n) - 1), v);
        }
        return;
    }
#endif
    (void)d_end;
    if (sw == 1) {   /* without AVX-512 (the generic and AVX2 variants): zeros and one memcpy */
        for (int ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
        if (hi > lo)
            memcpy(d + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
        for (int ow = hi > lo ? hi : lo; ow < Wo; ++ow) d[ow] = 0.0f;
        return;
    }
    /* strided rows (an AVX-512 gather was slower than this for CaffeNet's conv1, stride 4) */
    for (int ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
    for (int ow = lo; ow < hi; ++ow) d[ow] = src[(ptrdiff_t)ow * sw];
    for (int ow = hi; ow < Wo; ++ow) d[ow] = 0.0f;
}

/* Row r = (c*kh + i)*kw + j of cols, for all B images: each row is written contiguously. */
void decaf_im2col_row(const float *x, float *cols, int r, int B, int C, int H, int W, int kh, int kw,
                       int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo)
{
    const ptrdiff_t plane_out = (ptrdiff_t)Ho * Wo;
    const ptrdiff_t ncols = (ptrdiff_t)B * plane_out;
    const int c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    const int hoff = i * dh - pad_top, woff = j * dw - pad_left;
    int oh_lo, oh_hi, ow_lo, ow_hi;
    decaf_valid_outputs(hoff, sh, H, Ho, &oh_lo, &oh_hi);
    decaf_valid_outputs(woff, sw, W, Wo, &ow_lo, &ow_hi);

    for (int b = 0; b < B; ++b) {
        const float *xp = x + ((ptrdiff_t)b * C + c) * H * W;
        float *dst = cols + r * ncols + b * plane_out;
        for (int oh = 0; oh < Ho; ++oh) {
            float *d = dst + (ptrdiff_t)oh * Wo;
            if (oh < oh_lo || oh >= oh_hi) {
                for (int ow = 0; ow < Wo; ++ow) d[ow] = 0.0f;
                continue;
            }
            const float *row = xp + (ptrdiff_t)(oh * sh + hoff) * W;
            copy_row(d, row + woff, Wo, ow_lo, ow_hi, sw, cols + (r + 1) * ncols);
        }
    }
}

void decaf_im2col(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                  int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo)
{
    const int rows = C * kh * kw;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for((ptrdiff_t)rows * B * Ho * Wo))
    for (int r = 0; r < rows; ++r)
        decaf_im2col_row(x, cols, r, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);
}

void decaf_im2col_serial(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                         int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo)
{
    for (int r = 0; r < C * kh * kw; ++r)
        decaf_im2col_row(x, cols, r, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);
}

/* Plane (b, c) of x: zeroed, then every cols entry of channel c adds into the pixel it came from.
 * Only rows (c*kh + i)*kw + j write into this plane, so planes can run in parallel. */
static void col2im_plane(const float *cols, float *x, ptrdiff_t bc, int B, int C, int H, int W,
                         int kh, int kw, int sh, int sw, int pad_top, int pad_left, int dh, int dw,
                         int Ho, int Wo)
{
    const ptrdiff_t plane_in = (ptrdiff_t)H * W;
    const ptrdiff_t plane_out = (ptrdiff_t)Ho * Wo;
    const ptrdiff_t ncols = (ptrdiff_t)B * plane_out;
    const int b = (int)(bc / C), c = (int)(bc % C);
    float *xp = x + bc * plane_in;
    for (ptrdiff_t p = 0; p < plane_in; ++p) xp[p] = 0.0f;

    for (int i = 0; i < kh; ++i) {
        const int hoff = i * dh - pad_top;
        int oh_lo, oh_hi;
        decaf_valid_outputs(hoff, sh, H, Ho, &oh_lo, &oh_hi);
        for (int j = 0; j < kw; ++j) {
            const int woff = j * dw - pad_left;
            int ow_lo, ow_hi;
            decaf_valid_outputs(woff, sw, W, Wo, &ow_lo, &ow_hi);
            const float *src = cols + ((ptrdiff_t)(c * kh + i) * kw + j) * ncols + b * plane_out;
            for (int oh = oh_lo; oh < oh_hi; ++oh) {
                float *restrict row = xp + (ptrdiff_t)(oh * sh + hoff) * W;
                const float *restrict s = src + (ptrdiff_t)oh * Wo;
                if (sw == 1)     /* contiguous on both sides: a loop the compiler vectorises */
                    for (int ow = ow_lo; ow < ow_hi; ++ow) row[ow + woff] += s[ow];
                else
                    for (int ow = ow_lo; ow < ow_hi; ++ow) row[ow * sw + woff] += s[ow];
            }
        }
    }
}

void decaf_col2im(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                  int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * kh * kw * Ho * Wo))
    for (ptrdiff_t bc = 0; bc < planes; ++bc)
        col2im_plane(cols, x, bc, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);
}

void decaf_col2im_serial(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                         int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo)
{
    for (ptrdiff_t bc = 0; bc < (ptrdiff_t)B * C; ++bc)
        col2im_plane(cols, x, bc, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo);
}

/* buf[h][w] (Hp x Wp) = the plane at (h - pad_top, w - pad_left), 0 outside. */
void decaf_pad_plane(const float *xp, int H, int W, int pad_top, int pad_left, float *buf, int Hp, int Wp)
{
    for (int h = 0; h < Hp; ++h) {
        const int hi = h - pad_top;
        float *d = buf + (ptrdiff_t)h * Wp;
        if (hi < 0 || hi >= H) {
            for (int w = 0; w < Wp; ++w) d[w] = 0.0f;
            continue;
        }
        /* columns [0, pad_left) and [pad_left + W, Wp) are padding; the image row goes between
         * (clipped when Wp is narrower than the padded row: the windows never read past Wp) */
        const int lo = pad_left < Wp ? pad_left : Wp, n = W < Wp - lo ? W : Wp - lo;
        for (int w = 0; w < lo; ++w) d[w] = 0.0f;
        memcpy(d + lo, xp + (ptrdiff_t)hi * W, sizeof(float) * (size_t)n);
        for (int w = lo + n; w < Wp; ++w) d[w] = 0.0f;
    }
}
