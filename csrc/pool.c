#include "pool.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "plane_mean.h"
#include "threads.h"

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Every loop below takes one (b, c) plane per task: planes are independent, so backward passes
 * can add into dx without races. */

/* max(m, v) that lets a NaN through from either side. */
static inline float max_nan(float m, float v) { return ((v > m) | (v != v)) ? v : m; }

#ifdef __AVX512F__
/* Lanes l of a 16-float load starting at column c0 that fall inside [0, W). */
static inline __mmask16 inside(int c0, int W)
{
    const int lo = c0 < 0 ? -c0 : 0, hi = W - c0 < 16 ? W - c0 : 16;
    return hi > lo ? (__mmask16)(((1u << (hi - lo)) - 1) << lo) : 0;
}

/* 16 floats of a row from column c0, -inf in the lanes outside [0, W). Masked loads are slow on
 * this machine (AMD Zen 5: pool1 went from 8 to 2.5 ms without them), so where the 16 floats lie
 * inside the array [begin, end) they are loaded plainly and the lanes outside the row blended
 * away; only at the array's very ends does a masked load keep the read in bounds. */
static inline __m512 load_row16(const float *row, int c0, int W, const float *begin, const float *end)
{
    const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
    if (c0 >= 0 && c0 + 16 <= W)
        return _mm512_loadu_ps(row + c0);
    const __mmask16 keep = inside(c0, W);
    if (row + c0 >= begin && row + c0 + 16 <= end)
        return _mm512_mask_blend_ps(keep, neg_inf, _mm512_loadu_ps(row + c0));
    return _mm512_mask_loadu_ps(neg_inf, keep, row + c0);
}

/* One output row yr[0 .. Wo) of max pooling with stride sw = 1 or 2, 16 outputs per vector: each
 * tap (h, j) of the window is one load for stride 1, or two loads and a permute that keeps the
 * even columns for stride 2. Columns outside the image read as -inf; a NaN is carried in a mask.
 * begin, end: the whole input array. */
static void max_pool_row16(const float *xp, int W, int hs, int he, float *yr, int Wo, int kw, int sw,
                           int pad_left, const float *begin, const float *end)
{
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int ow0 = 0; ow0 < Wo; ow0 += 16) {
        const int n = Wo - ow0 < 16 ? Wo - ow0 : 16;
        __m512 m = _mm512_set1_ps(-INFINITY);
        __mmask16 nan = 0;
        for (int h = hs; h < he; ++h) {
            const float *row = xp + (ptrdiff_t)h * W;
            for (int j = 0; j < kw; ++j) {
                const int c0 = ow0 * sw + j - pad_left;     /* input column of lane 0 */
                const __m512 v = sw == 1 ? load_row16(row, c0, W, begin, end)
                                         : _mm512_permutex2var_ps(load_row16(row, c0, W, begin, end), evens,
                                                                  load_row16(row, c0 + 16, W, begin, end));
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                m = _mm512_max_ps(m, v);
            }
        }
        m = _mm512_mask_blend_ps(nan, m, _mm512_set1_ps(NAN));
        if (n == 16)
            _mm512_storeu_ps(yr + ow0, m);
        else
            _mm512_mask_storeu_ps(yr + ow0, (__mmask16)((1u << n) - 1), m);
    }
}
#endif
#ifdef __AVX2__   /* (also in the AVX-512 variant, for the argmax rows below) */
/* The AVX2 twin of the above: 8 outputs per vector, the lane masks made by integer compares. */

/* 8 floats of a row from column c0, -inf in the lanes outside [0, W); as load_row16: plain loads
 * where the 8 floats lie inside the array [begin, end), a masked load only at its very ends. */
static inline __m256 load_row8(const float *row, int c0, int W, const float *begin, const float *end)
{
    if (c0 >= 0 && c0 + 8 <= W)
        return _mm256_loadu_ps(row + c0);
    const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(c0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i keep = _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                                          _mm256_cmpgt_epi32(_mm256_set1_epi32(W), col));
    const __m256 v = row + c0 >= begin && row + c0 + 8 <= end ? _mm256_loadu_ps(row + c0)
                                                               : _mm256_maskload_ps(row + c0, keep);
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(keep));
}

/* The even lanes of a (8 floats) then b: a0 a2 a4 a6 b0 b2 b4 b6. */
static inline __m256 evens8(__m256 a, __m256 b)
{
    const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));   /* a0 a2 b0 b2 | a4 a6 b4 b6 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The odd lanes: a1 a3 a5 a7 b1 b3 b5 b7. */
static inline __m256 odds8(__m256 a, __m256 b)
{
    const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));   /* a1 a3 b1 b3 | a5 a7 b5 b7 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

#ifndef __AVX512F__
/* Outputs ow0 .. ow0 + 8 of a row from m, those below Wo. */
static inline void store_row8(float *yr, int ow0, int Wo, __m256 m)
{
    if (Wo - ow0 >= 8) {
        _mm256_storeu_ps(yr + ow0, m);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, m);
        for (int l = 0; l < Wo - ow0; ++l) yr[ow0 + l] = tmp[l];
    }
}

static void max_pool_row8(const float *xp, int W, int hs, int he, float *yr, int Wo, int kw, int sw,
                          int pad_left, const float *begin, const float *end)
{
    for (int ow0 = 0; ow0 < Wo; ow0 += 8) {
        __m256 m = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
        for (int h = hs; h < he; ++h) {
            const float *row = xp + (ptrdiff_t)h * W;
            for (int j = 0; j < kw; ++j) {
                const int c0 = ow0 * sw + j - pad_left;     /* input column of lane 0 */
                const __m256 v = sw == 1 ? load_row8(row, c0, W, begin, end)
                                         : evens8(load_row8(row, c0, W, begin, end),
                                                  load_row8(row, c0 + 8, W, begin, end));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                m = _mm256_max_ps(m, v);
            }
        }
        store_row8(yr, ow0, Wo, _mm256_blendv_ps(m, _mm256_set1_ps(NAN), nan));
    }
}

/* One output row of the inference max pooling by separating the window (AVX2), for stride 1 or 2:
 * first the maxima down the kh input rows of every column, into vm (in L1), then the maxima of kw
 * neighbouring entries of vm at the stride. A 3x3 stride-2 window costs about 1.5 vector
 * operations an output this way against 8 when each of the 9 taps is loaded, shuffled to the
 * stride and compared (max_pool_row8, which was compute-bound at 3.4-4.2 GB/s of input here).
 *
 * vm[PAD_V + c] holds column c's maximum for c in [0, W); the entries around it are -inf, so that a
 * window reaching past either edge (padding, ceil mode) compares -inf there: window ow starts at
 * vm + PAD_V - pad_left + ow sw. Returns 0 when an input value was a NaN (max_ps does not pass
 * one on reliably; the caller then redoes the row with max_pool_row8, which does). */
enum { PAD_V = 16, VM_FLOATS = 4096 };

/* The maxima down rows hs .. he of columns c .. c + 8, -inf in the lanes past W (a plane narrower
 * than 8; the rows are read through load_row8, a plain load whenever the 8 columns are inside the
 * row); a NaN among them is or-ed into *nan. */
static inline __attribute__((always_inline)) __m256 column_max8(const float *xp, int W, int hs, int he, int c,
                                                                __m256 *nan, const float *begin, const float *end)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (int h = hs; h < he; ++h) {
        const __m256 v = load_row8(xp + (ptrdiff_t)h * W, c, W, begin, end);
        *nan = _mm256_or_ps(*nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        m = _mm256_max_ps(m, v);
    }
    return m;
}

static int max_pool_row8_separable(const float *xp, int W, int hs, int he, float *yr, int Wo, int kw, int sw,
                                   int pad_left, float *vm, const float *begin, const float *end_x)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 nan = _mm256_setzero_ps();
    const int end = PAD_V - pad_left + (((Wo + 7) / 8) * 8 - 1) * sw + kw + 8;   /* the last float read */
    for (int i = 0; i < PAD_V; i += 8)
        _mm256_storeu_ps(vm + i, ninf);
    /* Down the rows, 8 columns at a time; a row of 8 columns or more ends with the vector of its last
     * 8 (overlapping the one before: the same maxima written twice), not with a scalar loop, which
     * made odd-width planes (55, 111: SqueezeNet, GoogLeNet) 2-3x slower per value. */
    int c = 0;
    for (; c + 8 <= W; c += 8)
        _mm256_storeu_ps(vm + PAD_V + c, column_max8(xp, W, hs, he, c, &nan, begin, end_x));
    if (c < W) {   /* the last 8 columns, or a plane narrower than 8 (GoogLeNet's 7x7) as one vector */
        const int last = W >= 8 ? W - 8 : 0;
        _mm256_storeu_ps(vm + PAD_V + last, column_max8(xp, W, hs, he, last, &nan, begin, end_x));
    }
    if (_mm256_movemask_ps(nan))
        return 0;
    for (int i = PAD_V + W; i < end; ++i)
        vm[i] = -INFINITY;
    const float *v0 = vm + PAD_V - pad_left;
    for (int ow0 = 0; ow0 < Wo; ow0 += 8) {       /* along the row: kw neighbours at the stride */
        const float *w = v0 + ow0 * sw;
        __m256 m = _mm256_loadu_ps(w);
        for (int j = 1; j < kw; ++j)
            m = _mm256_max_ps(m, _mm256_loadu_ps(w + j));
        if (sw == 2) {                            /* windows from 16 starts; every other one is ours */
            __m256 m2 = _mm256_loadu_ps(w + 8);
            for (int j = 1; j < kw; ++j)
                m2 = _mm256_max_ps(m2, _mm256_loadu_ps(w + 8 + j));
            m = evens8(m, m2);
        }
        store_row8(yr, ow0, Wo, m);
    }
    return 1;
}
#endif

/* One output row of the train-phase max pooling (values and argmax) for stride 1 or 2, 8 outputs
 * per vector, with decaf_max_pool_forward's rule: a lane takes its window's first real pixel,
 * then a value strictly greater (so ties keep the first, and a NaN is kept once taken but never
 * taken over a number). Lane l of tap (h, j) reads column c0 + l sw; lanes outside [0, W) read -inf
 * and are never taken. yr, ar: the row's values and flat indices h W + w (-1: no real pixel). */
static void max_pool_argmax_row8(const float *xp, int W, int hs, int he, float *yr, int *ar, int Wo, int kw,
                                 int sw, int pad_left, const float *begin, const float *end)
{
    const __m256i lane = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(sw));
    for (int ow0 = 0; ow0 < Wo; ow0 += 8) {
        const int n = Wo - ow0 < 8 ? Wo - ow0 : 8;
        __m256 m = _mm256_set1_ps(-INFINITY), have = _mm256_setzero_ps();
        __m256i best = _mm256_set1_epi32(-1);
        for (int h = hs; h < he; ++h) {
            const float *row = xp + (ptrdiff_t)h * W;
            for (int j = 0; j < kw; ++j) {
                const int c0 = ow0 * sw + j - pad_left;     /* input column of lane 0 */
                const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(c0), lane);
                const __m256 real = _mm256_castsi256_ps(_mm256_and_si256(
                    _mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)), _mm256_cmpgt_epi32(_mm256_set1_epi32(W), col)));
                const __m256 v = sw == 1 ? load_row8(row, c0, W, begin, end)
                                         : evens8(load_row8(row, c0, W, begin, end),
                                                  load_row8(row, c0 + 8, W, begin, end));
                const __m256 take = _mm256_or_ps(_mm256_andnot_ps(have, real), _mm256_cmp_ps(v, m, _CMP_GT_OQ));
                m = _mm256_blendv_ps(m, v, take);
                best = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(best),
                    _mm256_castsi256_ps(_mm256_add_epi32(col, _mm256_set1_epi32(h * W))), take));
                have = _mm256_or_ps(have, real);
            }
        }
        if (n == 8) {
            _mm256_storeu_ps(yr + ow0, m);
            _mm256_storeu_si256((__m256i *)(ar + ow0), best);
        } else {
            float tv[8];
            int ti[8];
            _mm256_storeu_ps(tv, m);
            _mm256_storeu_si256((__m256i *)ti, best);
            for (int l = 0; l < n; ++l) yr[ow0 + l] = tv[l], ar[ow0 + l] = ti[l];
        }
    }
}
#endif

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
#ifdef __AVX2__
            if (sw <= 2) {
                max_pool_argmax_row8(xp, W, hs, he, yp + (ptrdiff_t)oh * Wo, ap + (ptrdiff_t)oh * Wo, Wo, kw, sw,
                                     pad_left, x, x + planes * H * W);
                continue;
            }
#endif
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

void decaf_max_pool_values(const float *x, float *y, int B, int C, int H, int W,
                           int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        const float *xp = x + bc * H * W;
#if defined(__AVX2__) && !defined(__AVX512F__)
        float vm[VM_FLOATS];                      /* the separable rows' column maxima */
#endif
        for (int oh = 0; oh < Ho; ++oh) {
            const int hs = imax(oh * sh - pad_top, 0), he = imin(oh * sh - pad_top + kh, H);
            float *yr = y + bc * Ho * Wo + (ptrdiff_t)oh * Wo;
#if defined(__AVX512F__)
            if (sw <= 2) {
                max_pool_row16(xp, W, hs, he, yr, Wo, kw, sw, pad_left, x, x + planes * H * W);
                continue;
            }
#elif defined(__AVX2__)
            if (sw <= 2) {
                if (!(pad_left < PAD_V && (((Wo + 7) / 8) * 8 + 8) * sw + kw + 2 * PAD_V <= VM_FLOATS
                      && W <= VM_FLOATS - 2 * PAD_V
                      && max_pool_row8_separable(xp, W, hs, he, yr, Wo, kw, sw, pad_left, vm, x,
                                                 x + planes * H * W)))
                    max_pool_row8(xp, W, hs, he, yr, Wo, kw, sw, pad_left, x, x + planes * H * W);
                continue;
            }
#endif
            for (int ow = 0; ow < Wo; ++ow) {
                const int ws = imax(ow * sw - pad_left, 0), we = imin(ow * sw - pad_left + kw, W);
                float m = -INFINITY;
                for (int h = hs; h < he; ++h)
                    for (int w = ws; w < we; ++w) m = max_nan(m, xp[(ptrdiff_t)h * W + w]);
                yr[ow] = m;
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

/* One plane of average pooling, the window separated: per output row, the sums down the window's
 * rows of every column the row's windows reach (cs, in L1), then the sums of kw neighbouring
 * column sums at the stride, each divided by its window's count. About (kh + kw) / S adds an
 * output against kh kw, in loops GCC vectorises (Inception-v3's 3x3 stride-1 pools at batch 16,
 * 2 threads, Zen 3: 27-35 -> 7-8 ms a layer; docs/performance.md, seventh round). cs[i] holds
 * column i - pad_left, zero outside the image (its ends are zeroed by the caller); nw[ow] is
 * window ow's count of columns (window()). The sums are in another order than the window's rows
 * one after the other: equal to that within float32 rounding. */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* as activation.h's loops: the division under a select
                                            * (a window of no real pixel gives 0) stays a branch per
                                            * output without it, and the row loops are not vectorised
                                            * (Inception's 3x3 pools at batch 1: 2-3 GB/s) */
static void avg_pool_plane(const float *restrict xp, float *restrict yp, int H, int W, int Ho, int Wo, int kh,
                           int kw, int sh, int sw, int pad_top, int pad_left, int pad_bottom, int count_include_pad,
                           float *restrict cs, const float *restrict nw)
{
    const int L = (Wo - 1) * sw + kw;                      /* the columns the windows reach */
    const int w1 = imin(W, L - pad_left);                  /* the real ones among them: 0 .. w1 */
    float *restrict col = cs + pad_left;                   /* col[w]: column w */
    for (int oh = 0; oh < Ho; ++oh) {
        int hs, he;
        const float nh = (float)window(oh, sh, kh, pad_top, pad_bottom, H, count_include_pad, &hs, &he);
        /* Plane rows are short (7-56 floats): one loop per row where the window has 2 or 3 rows,
         * and the row sums, the division and the store in one loop for the common windows; a loop
         * per step cost more in its set-up than in its adds. */
        const float *r = xp + (ptrdiff_t)hs * W;
        if (he - hs == 3) {
            for (int w = 0; w < w1; ++w) col[w] = r[w] + r[W + w] + r[2 * W + w];
        } else if (he - hs == 2) {
            for (int w = 0; w < w1; ++w) col[w] = r[w] + r[W + w];
        } else if (he <= hs) {
            for (int w = 0; w < w1; ++w) col[w] = 0.0f;
        } else {
            for (int w = 0; w < w1; ++w) col[w] = r[w];
            for (int h = hs + 1; h < he; ++h)
                for (int w = 0; w < w1; ++w) col[w] += xp[(ptrdiff_t)h * W + w];
        }
        float *restrict yr = yp + (ptrdiff_t)oh * Wo;
        if (kw == 3 && sw == 1) {          /* Inception's 3x3 stride-1 pools */
            for (int ow = 0; ow < Wo; ++ow) {
                const float n = nh * nw[ow];
                yr[ow] = n > 0.0f ? (cs[ow] + cs[ow + 1] + cs[ow + 2]) / n : 0.0f;
            }
        } else if (kw == 2 && sw == 2) {   /* DenseNet's 2x2 stride-2 transitions */
            int ow = 0;
#ifdef __AVX2__   /* (GCC does not vectorise the pairs at the stride: 8 outputs from 16 sums at a time) */
            const __m256 vnh = _mm256_set1_ps(nh), zero = _mm256_setzero_ps();
            for (; ow + 8 <= Wo; ow += 8) {
                const __m256 a = _mm256_loadu_ps(cs + 2 * ow), b = _mm256_loadu_ps(cs + 2 * ow + 8);
                const __m256 n = _mm256_mul_ps(vnh, _mm256_loadu_ps(nw + ow));
                const __m256 q = _mm256_div_ps(_mm256_add_ps(evens8(a, b), odds8(a, b)), n);
                _mm256_storeu_ps(yr + ow, _mm256_blendv_ps(zero, q, _mm256_cmp_ps(n, zero, _CMP_GT_OQ)));
            }
#endif
            for (; ow < Wo; ++ow) {
                const float n = nh * nw[ow];
                yr[ow] = n > 0.0f ? (cs[2 * ow] + cs[2 * ow + 1]) / n : 0.0f;
            }
        } else {
            for (int ow = 0; ow < Wo; ++ow) {
                float sum = cs[ow * sw];
                for (int j = 1; j < kw; ++j) sum += cs[ow * sw + j];
                const float n = nh * nw[ow];
                yr[ow] = n > 0.0f ? sum / n : 0.0f;
            }
        }
    }
}

/* One plane one window at a time (when there is no memory for the buffers of the two below). */
static void avg_pool_rows_unbuffered(const float *xp, float *yp, int H, int W, int Ho, int Wo, int kh, int kw,
                                     int sh, int sw, int pad_top, int pad_left, int pad_bottom, int pad_right,
                                     int count_include_pad)
{
    for (int oh = 0; oh < Ho; ++oh) {
        int hs, he;
        const int nh = window(oh, sh, kh, pad_top, pad_bottom, H, count_include_pad, &hs, &he);
        for (int ow = 0; ow < Wo; ++ow) {
            int ws, we;
            const int n = nh * window(ow, sw, kw, pad_left, pad_right, W, count_include_pad, &ws, &we);
            float sum = 0.0f;
            for (int h = hs; h < he; ++h)
                for (int w = ws; w < we; ++w) sum += xp[h * W + w];
            yp[oh * Wo + ow] = n > 0 ? sum / (float)n : 0.0f;
        }
    }
}

/* The 3x3 stride-1 pooling that keeps the plane's size (pads 1 on every side: Inception's nine
 * branch pools), over the whole plane in long loops instead of one short loop per row (35, 17 and 8
 * wide rows, whose loop set-up cost more than their adds: 2-3 GB/s). The rows are contiguous, so
 * the column sums of all interior rows are one loop over the flat plane, v[i] = x[i - W] + x[i] +
 * x[i + W]; the sums across are another, y[i] = (v[i - 1] + v[i] + v[i + 1]) / n[i] (n: the
 * window counts, nh nw, the same for every plane), whose first and last column of each row, where
 * i - 1 or i + 1 is in the next row, are redone with a 0 for the column outside. The same additions
 * in the same order as avg_pool_plane: the same values, bit for bit. v: H W floats. */
static void avg_pool_3x3_same(const float *restrict xp, float *restrict yp, int H, int W, float *restrict v,
                              const float *restrict n)
{
    const ptrdiff_t P = (ptrdiff_t)H * W;
    for (int w = 0; w < W; ++w) v[w] = xp[w] + xp[W + w];                          /* row 0 */
    for (ptrdiff_t i = W; i < P - W; ++i) v[i] = xp[i - W] + xp[i] + xp[i + W];    /* rows 1 .. H - 2 */
    for (ptrdiff_t i = P - W; i < P; ++i) v[i] = xp[i - W] + xp[i];                  /* row H - 1 */
    for (ptrdiff_t i = 1; i < P - 1; ++i) yp[i] = (v[i - 1] + v[i] + v[i + 1]) / n[i];
    for (ptrdiff_t r = 0; r < P; r += W) {
        yp[r] = (0.0f + v[r] + v[r + 1]) / n[r];
        yp[r + W - 1] = (v[r + W - 2] + v[r + W - 1] + 0.0f) / n[r + W - 1];
    }
}

#pragma GCC pop_options

/* The calling thread's share of the planes for avg_pool_3x3_same (inside a parallel region), with
 * its own column sums and the window counts. */
static void avg_pool_part_3x3_same(const float *x, float *y, ptrdiff_t planes, int H, int W,
                                   int count_include_pad)
{
    const ptrdiff_t P = (ptrdiff_t)H * W;
    float *v = malloc(sizeof(float) * (size_t)P * 2), *n = v ? v + P : NULL;
    if (v) {
        for (int oh = 0; oh < H; ++oh) {
            int s0, e0, s1, e1;
            const float nh = (float)window(oh, 1, 3, 1, 1, H, count_include_pad, &s0, &e0);
            for (int ow = 0; ow < W; ++ow) {
                const float nw = (float)window(ow, 1, 3, 1, 1, W, count_include_pad, &s1, &e1);
                n[(ptrdiff_t)oh * W + ow] = nh * nw;
            }
        }
    }
    #pragma omp for schedule(static)
    for (ptrdiff_t bc = 0; bc < planes; ++bc) {
        if (v)
            avg_pool_3x3_same(x + bc * P, y + bc * P, H, W, v, n);
        else   /* (no memory for the buffers: one window at a time) */
            avg_pool_rows_unbuffered(x + bc * P, y + bc * P, H, W, H, W, 3, 3, 1, 1, 1, 1, 1, 1,
                                     count_include_pad);
    }
    free(v);
}

void decaf_avg_pool_forward(const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,
                            int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                            int pad_bottom, int pad_right, int count_include_pad)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    if (Ho == 1 && Wo == 1 && kh == H && kw == W && pad_top == 0 && pad_left == 0 && pad_bottom == 0
        && pad_right == 0) {
        /* global average pooling (squeeze-excitation blocks, classifier heads; 7x7 planes too: as
         * windows 1280 of them took 0.068 ms at batch 1 on one thread, as plane means 0.042) */
        #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(planes * H * W))
        for (ptrdiff_t bc = 0; bc < planes; ++bc)
            y[bc] = decaf_plane_mean(x + bc * H * W, (ptrdiff_t)H * W);
        return;
    }
    if (Ho < 1 || Wo < 1)
        return;
    if (kh == 3 && kw == 3 && sh == 1 && sw == 1 && pad_top == 1 && pad_left == 1 && pad_bottom == 1
        && pad_right == 1 && Ho == H && Wo == W && H >= 2 && W >= 2) {
        #pragma omp parallel num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
        avg_pool_part_3x3_same(x, y, planes, H, W, count_include_pad);
        return;
    }
    #pragma omp parallel num_threads(decaf_threads_for(planes * Ho * Wo * kh * kw))
    {
        /* per thread: the column sums (L, plus the image's columns past them) and the windows'
         * counts of columns */
        const int L = (Wo - 1) * sw + kw;
        const size_t ncs = (size_t)L + (size_t)W + (size_t)(pad_left > 0 ? pad_left : 0);
        float *cs = malloc(sizeof(float) * ncs), *nw = malloc(sizeof(float) * (size_t)Wo);
        if (cs && nw) {
            for (size_t i = 0; i < ncs; ++i) cs[i] = 0.0f;
            for (int ow = 0; ow < Wo; ++ow) {
                int ws, we;
                nw[ow] = (float)window(ow, sw, kw, pad_left, pad_right, W, count_include_pad, &ws, &we);
            }
        }
        #pragma omp for schedule(static)
        for (ptrdiff_t bc = 0; bc < planes; ++bc) {
            const float *xp = x + bc * H * W;
            float *yp = y + bc * Ho * Wo;
            if (cs && nw)
                avg_pool_plane(xp, yp, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left, pad_bottom,
                               count_include_pad, cs, nw);
            else   /* (no memory for the buffers: one window at a time) */
                avg_pool_rows_unbuffered(xp, yp, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left, pad_bottom,
                                         pad_right, count_include_pad);
        }
        free(cs);
        free(nw);
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
