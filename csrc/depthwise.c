#include "depthwise.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#include <stdlib.h>
#define DW_SIMD 1
#endif

#include "im2col.h" /* decaf_valid_outputs: the same window geometry as im2col */
#include "plane_mean.h"
#include "pool.h"      /* decaf_avg_pool_forward: the means of the other paths */
#include "threads.h"

/* All loops run over the kernel offsets (i, j) outside and the output pixels inside, so the
 * innermost loop walks an output row contiguously and needs no bounds test: the valid (oh, ow)
 * ranges for each offset are computed once. */

#ifdef __AVX512F__
enum { DW_LANES = 16 };

/* The AVX-512 path works on one (b, c) plane at a time, copied into a zero-padded buffer so that
 * every load is a plain one (no masks, no bounds tests), and computes a tile of R output rows x V
 * vectors of 16 outputs at once: R * V = 8 independent sums, where one vector at a time left the
 * adds waiting on each other (a 5x5 window is a chain of 25). Each output still sums its taps in
 * (i, j) order with a multiply then an add, as the scalar loop and the NumPy reference do, so the
 * results are identical. */
enum { DW_ACC = 8 };


/* Output rows oh0 .. oh0 + R (those below Ho stored), vectors v0 .. v0 + V of 16 columns. */
static inline __attribute__((always_inline)) void dw_tile(
    const float *buf, int Wp, const float *wc, int kh, int kw, int sh, int sw, int dil_h, float bias,
    float *yp, int Ho, int Wo, int oh0, int v0, const int R, const int V)
{
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512 acc[DW_ACC];
    for (int a = 0; a < R * V; ++a) acc[a] = _mm512_setzero_ps();
    for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
            const __m512 wv = _mm512_set1_ps(wc[i * kw + j]);
            for (int r = 0; r < R; ++r) {
                const float *row = buf + (ptrdiff_t)((oh0 + r) * sh + i * dil_h) * Wp + j;
                for (int v = 0; v < V; ++v) {
                    const float *p = row + (ptrdiff_t)(v0 + v) * 16 * sw;
                    const __m512 xv = sw == 1 ? _mm512_loadu_ps(p)
                                              : _mm512_permutex2var_ps(_mm512_loadu_ps(p), evens, _mm512_loadu_ps(p + 16));
                    acc[r * V + v] = _mm512_add_ps(acc[r * V + v], _mm512_mul_ps(xv, wv));
                }
            }
        }
    for (int r = 0; r < R && oh0 + r < Ho; ++r)
        for (int v = 0; v < V; ++v) {
            const int ow0 = (v0 + v) * 16;
            if (ow0 >= Wo)
                break;
            const __m512 o = _mm512_add_ps(acc[r * V + v], _mm512_set1_ps(bias));
            float *out = yp + (ptrdiff_t)(oh0 + r) * Wo + ow0;
            const int n = Wo - ow0 < 16 ? Wo - ow0 : 16;
            if (n == 16)
                _mm512_storeu_ps(out, o);
            else
                _mm512_mask_storeu_ps(out, (__mmask16)((1u << n) - 1), o);
        }
}

/* Vectors per tile for a row of Wo outputs: 1, 2, 4 or 8 (with 8, 4, 2 or 1 rows). */
static int dw_vectors(int Wo)
{
    const int need = (Wo + 15) / 16;
    return need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : 8;
}

static void dw_plane(const float *buf, int Wp, const float *wc, int kh, int kw, int sh, int sw, int dil_h,
                     float bias, float *yp, int Ho, int Wo)
{
    const int V = dw_vectors(Wo), R = DW_ACC / V, vectors = (Wo + 15) / 16;
    for (int oh0 = 0; oh0 < Ho; oh0 += R)
        for (int v0 = 0; v0 < vectors; v0 += V) {
            switch (V) {
            case 1: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 8, 1); break;
            case 2: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 4, 2); break;
            case 4: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 2, 4); break;
            default: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 1, 8); break;
            }
        }
}
#elif defined(DW_SIMD)
/* The AVX2 path: the AVX-512 one with vectors of 8 outputs (stride 2: two loads, a shuffle and a
 * lane permute keep the even columns). Multiply, then add, as there: identical results. */
enum { DW_LANES = 8, DW_ACC = 8 };

/* The even lanes of the 16 floats at p: p[0], p[2], .., p[14]. */
static inline __m256 even8(const float *p)
{
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    const __m256 s = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));   /* a0 a2 b0 b2 | a4 a6 b4 b6 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), _MM_SHUFFLE(3, 1, 2, 0)));
}

static inline __attribute__((always_inline)) void dw_tile(
    const float *buf, int Wp, const float *wc, int kh, int kw, int sh, int sw, int dil_h, float bias,
    float *yp, int Ho, int Wo, int oh0, int v0, const int R, const int V)
{
    __m256 acc[DW_ACC];
    _Pragma("GCC unroll 8") for (int a = 0; a < R * V; ++a) acc[a] = _mm256_setzero_ps();
    for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j) {
            const __m256 wv = _mm256_set1_ps(wc[i * kw + j]);
            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
                const float *row = buf + (ptrdiff_t)((oh0 + r) * sh + i * dil_h) * Wp + j;
                _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) {
                    const float *p = row + (ptrdiff_t)(v0 + v) * 8 * sw;
                    const __m256 xv = sw == 1 ? _mm256_loadu_ps(p) : even8(p);
                    acc[r * V + v] = _mm256_add_ps(acc[r * V + v], _mm256_mul_ps(xv, wv));
                }
            }
        }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
        _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) {
            const int ow0 = (v0 + v) * 8;
            if (oh0 + r >= Ho || ow0 >= Wo)
                continue;
            const __m256 o = _mm256_add_ps(acc[r * V + v], _mm256_set1_ps(bias));
            float *out = yp + (ptrdiff_t)(oh0 + r) * Wo + ow0;
            const int n = Wo - ow0 < 8 ? Wo - ow0 : 8;
            if (n == 8) {
                _mm256_storeu_ps(out, o);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, o);
                for (int l = 0; l < n; ++l) out[l] = tmp[l];
            }
        }
}

/* Vectors per tile for a row of Wo outputs: 1, 2, 4 or 8 (with 8, 4, 2 or 1 rows). */
static int dw_vectors(int Wo)
{
    const int need = (Wo + 7) / 8;
    return need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : 8;
}

static void dw_plane(const float *buf, int Wp, const float *wc, int kh, int kw, int sh, int sw, int dil_h,
                     float bias, float *yp, int Ho, int Wo)
{
    const int V = dw_vectors(Wo), R = DW_ACC / V, vectors = (Wo + 7) / 8;
    for (int oh0 = 0; oh0 < Ho; oh0 += R)
        for (int v0 = 0; v0 < vectors; v0 += V) {
            switch (V) {
            case 1: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 8, 1); break;
            case 2: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 4, 2); break;
            case 4: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 2, 4); break;
            default: dw_tile(buf, Wp, wc, kh, kw, sh, sw, dil_h, bias, yp, Ho, Wo, oh0, v0, 1, 8); break;
            }
        }
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* The AVX2 fast path for the layers of mobile nets: square 3x3 or 5x5 windows, the same stride 1 or 2
 * both ways, no dilation; and ConvNeXt's 7x7 windows at stride 1, in the same tiles (its four
 * shapes at batch 1, 2 threads, Zen 3, against the generic loops: 1.60-1.83 -> 1.01-1.32 ms in all;
 * at batch 16 28-31 -> 17-23 ms, two runs each). Each thread keeps one zeroed buffer for the padded plane: the padding
 * stays zero from plane to plane, so a plane's copy writes only its image rows (8-wide loads, the
 * row's tail a load with its lanes past the row zeroed, which land in the right padding). At
 * stride 2 the rows are placed so that those stores are 32-byte aligned, and the copy also splits each padded
 * row into its even and odd columns (two halves of the buffer row), so that every tap of the
 * convolution is one plain unaligned load of 8 outputs' inputs.
 *
 * A tile is R output rows x V vectors of 8 columns (R <= 8 with V = 1, for planes at most 8
 * wide; 2 x 4 at stride 2 for 3x3 windows on rows of 4 vectors and more; else R <= 4, V = 2), its
 * R V sums in registers, each tap a broadcast weight times one unaligned load per sum. In the
 * tiles each sum takes its taps in (i, j) order, a multiply then an add, as the scalar loop and
 * the NumPy reference do: the results are identical to theirs (FMAs there were no faster). Planes
 * run in tiles are copied and computed in bands of rows that stay in L1 (dwf_forward). 3x3
 * windows run in strips of 8 columns instead, walking the rows down, the weights in registers and
 * FMAs (dwf_strip_k at stride 1, also for 5x5 and 7x7 on planes wider than 8; dwf_strip3s2 at
 * stride 2, in the same bands, on inputs that are not prefetched): their results differ from the
 * reference's in the last bits. The bias and a clamp (ReLU, ReLU6) are applied in the registers;
 * other epilogues run over the plane just written (still in L1).
 *
 * Threads take chunks of planes as they go (dynamic), and on large inputs each prefetches the
 * next plane of its chunk while computing one (dwf_prefetch_lines). Tried and dropped (Zen 3,
 * measured against this code): strips for stride 2 and 5x5 windows, strips of 3 or 4 vectors, and
 * tiles that load each input row once for all the output rows it feeds (GCC spilled their sums:
 * no faster, 5x5 up to 2x slower). */
#define DW_FAST 1

static const int32_t dwf_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* The first n (1..8) lanes on. */
static inline __m256i dwf_mask(int n)
{
    return _mm256_loadu_si256((const __m256i *)(dwf_masks + 8 - n));
}

typedef struct {
    ptrdiff_t rs;     /* floats per buffer row (stride 2: a multiple of 8) */
    ptrdiff_t half;   /* stride 2: where a row's odd columns start (its even ones at 0) */
    int rows;         /* buffer rows */
    int lead;         /* floats from a 32-byte boundary to the buffer's start */
} dwf_layout;

static dwf_layout dwf_make_layout(int K, int S, int W, int Ho, int Wo, int pl)
{
    /* Stride 2: the copy's 8-float stores land on 32-byte boundaries (rows a multiple of 8 floats,
     * the start placed so): unaligned, half of them crossed a cache line, and the copy took as long
     * as the convolution. (At stride 1 the same made the copy 13 % faster but the 3x3 strips on
     * 112 x 112 planes up to 15 % slower and erratic: rows as before there.) */
    dwf_layout L;
    const int wo8 = (Wo + 7) / 8 * 8;
    if (S == 1) {
        const int need = wo8 + K - 1, fill = pl + (W + 7) / 8 * 8;
        L.rs = need > fill ? need : fill;
        L.half = 0;
        L.lead = 0;
    } else {
        const int need = wo8 + (K - 1) / 2, fill = (pl + (W + 15) / 16 * 16 + 1) / 2 + 1;
        const int h = need > fill ? need : fill;
        /* the stores of a row (dwf_fill) go to columns (w0 + pl) / 2 and half + (w0 + pl) / 2 (pl
         * even), or half + (w0 + pl - 1) / 2 and (w0 + pl + 1) / 2 (pl odd), w0 a multiple of 16 */
        L.half = (pl & 1) == 0 ? (h + 7) / 8 * 8 : h + ((1 - h) % 8 + 8) % 8;
        L.rs = (2 * L.half + 7) / 8 * 8;
        L.lead = (pl & 1) == 0 ? (8 - (pl / 2) % 8) % 8 : (8 - ((pl + 1) / 2) % 8) % 8;
    }
    L.rows = (Ho - 1) * S + K;
    return L;
}

/* The first n (1..7) floats at p, the other lanes 0. A plain load and a mask where the 8 floats
 * are inside the input (which ends at end): a masked load (vmaskmovps) waits longer on Zen 3. */
static inline __m256 dwf_load_part(const float *p, int n, const float *end)
{
    const __m256i m = dwf_mask(n);
    return p + 8 <= end ? _mm256_and_ps(_mm256_loadu_ps(p), _mm256_castsi256_ps(m)) : _mm256_maskload_ps(p, m);
}

/* The even lanes of a, b (a0 a2 a4 a6 b0 b2 b4 b6) into *ev, the odd ones into *od: a shuffle
 * gives a0 a2 b0 b2 | a4 a6 b4 b6, then the middle 64-bit pairs are swapped. */
static inline __attribute__((always_inline)) void dwf_split(__m256 a, __m256 b, __m256 *ev, __m256 *od)
{
    *ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
                                                 _MM_SHUFFLE(3, 1, 2, 0)));
    *od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))),
                                                 _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The image rows of plane xp into the zero-padded buffer (its padding already zero); the input
 * ends at end. */
static inline __attribute__((always_inline)) void dwf_fill(const float *xp, int H, int W, int pt, int pl, int S, float *buf, const dwf_layout *L, int p0, int p1,
                     const float *end)
{
    for (int h = p0 - pt > 0 ? p0 - pt : 0; h < H && h + pt < p1; ++h) {
        const float *src = xp + (ptrdiff_t)h * W;
        float *d = buf + (ptrdiff_t)(h + pt) * L->rs;
        if (S == 1) {
            int w0 = 0;
            for (; w0 + 8 <= W; w0 += 8) _mm256_storeu_ps(d + pl + w0, _mm256_loadu_ps(src + w0));
            if (w0 < W)
                _mm256_storeu_ps(d + pl + w0, dwf_load_part(src + w0, W - w0, end));
        } else {
            /* input column w is padded column w + pl: even ones in the first half, odd in the
             * second; the even lanes of 16 input columns from w0 go to ev + w0 / 2, the odd ones to
             * od + w0 / 2 (whole chunks in a loop of their own: with the tests for the row's end
             * and pl's parity inside, the copy took twice as long) */
            float *ev_to = (pl & 1) == 0 ? d + pl / 2 : d + L->half + (pl - 1) / 2;
            float *od_to = (pl & 1) == 0 ? d + L->half + pl / 2 : d + (pl + 1) / 2;
            int w0 = 0;
            for (; w0 + 16 <= W; w0 += 16) {
                __m256 ev, od;
                dwf_split(_mm256_loadu_ps(src + w0), _mm256_loadu_ps(src + w0 + 8), &ev, &od);
                _mm256_storeu_ps(ev_to + w0 / 2, ev);
                _mm256_storeu_ps(od_to + w0 / 2, od);
            }
            if (w0 < W) {
                const int n = W - w0;
                const __m256 a = n >= 8 ? _mm256_loadu_ps(src + w0) : dwf_load_part(src + w0, n, end);
                const __m256 b = n > 8 ? dwf_load_part(src + w0 + 8, n - 8, end) : _mm256_setzero_ps();
                __m256 ev, od;
                dwf_split(a, b, &ev, &od);
                _mm256_storeu_ps(ev_to + w0 / 2, ev);
                _mm256_storeu_ps(od_to + w0 / 2, od);
            }
        }
    }
}

/* The next plane's input is brought into L2 a few lines at a time while this plane is computed
 * (with prefetch instructions between the tiles or strip rows): its copy into the buffer (dwf_fill)
 * then reads L2 instead of waiting on L3 or memory. p: the next line to fetch, end: the end of
 * the next plane. */
static inline __attribute__((always_inline)) void dwf_prefetch_lines(const char **p, const char *end, int n)
{
    for (int k = 0; k < n; ++k, *p += 64)
        if (*p < end)
            _mm_prefetch(*p, _MM_HINT_T1);
}

/* Output row oh, columns ow .. ow + 8 (those below Wo): the sum acc + bias, clamped if asked. */
static inline __attribute__((always_inline)) void dwf_store(__m256 acc, float *yp, int Ho, int Wo, int oh, int ow,
                                                            __m256 bias, int clamp, __m256 lo, __m256 hi)
{
    __m256 o = _mm256_add_ps(acc, bias);
    if (clamp)   /* max(lo, o), min(hi, .): a NaN in o passes through, as in decaf_act_clamp */
        o = _mm256_min_ps(hi, _mm256_max_ps(lo, o));
    float *out = yp + (ptrdiff_t)oh * Wo + ow;
    /* a partial vector is stored whole, its extra lanes landing at the start of the next row(s),
     * which are stored later (see dwf_plane); but never past the plane's end */
    if (oh * Wo + ow + 8 <= Ho * Wo)
        _mm256_storeu_ps(out, o);
    else
        _mm256_maskstore_ps(out, dwf_mask(Wo - ow), o);
}

/* Output rows oh0 .. oh0 + R, columns ow0 .. ow0 + 8 V (those below Wo stored). */
static inline __attribute__((always_inline)) void dwf_tile(
    const float *buf, const dwf_layout *L, const float *wc, const int K, const int S, const int R, const int V,
    float *yp, int Ho, int Wo, int oh0, int ow0, __m256 bias, int clamp, __m256 lo, __m256 hi)
{
    __m256 acc[12];
    _Pragma("GCC unroll 12") for (int a = 0; a < R * V; ++a) acc[a] = _mm256_setzero_ps();
    /* A real loop over the window's rows (not unrolled): fully unrolled, GCC loaded every tap of
     * the tile first and then summed one output vector at a time, spilling (5x5: 9x slower). */
    _Pragma("GCC unroll 1") for (int i = 0; i < K; ++i) {
        const float *row = buf + (ptrdiff_t)(oh0 * S + i) * L->rs + ow0;
        _Pragma("GCC unroll 7") for (int j = 0; j < K; ++j) {
            const float *p = S == 1 ? row + j : row + (j & 1 ? L->half : 0) + j / 2;
            const __m256 wv = _mm256_broadcast_ss(wc + i * K + j);
            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
                _Pragma("GCC unroll 4") for (int v = 0; v < V; ++v)
                    acc[r * V + v] = _mm256_add_ps(acc[r * V + v],
                                                   _mm256_mul_ps(_mm256_loadu_ps(p + r * S * L->rs + 8 * v), wv));
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)
        _Pragma("GCC unroll 4") for (int v = 0; v < V; ++v)
            dwf_store(acc[r * V + v], yp, Ho, Wo, oh0 + r, ow0 + 8 * v, bias, clamp, lo, hi);
}

/* A strip's output vector o for output columns ow0 .. ow0 + 8 at out, clamped if asked, stored
 * whole (past the row's end its lanes land on the next rows, stored later: the strips run right to
 * left and down), but never past the plane's end: there only its first n = Wo - ow0 lanes. */
static inline __attribute__((always_inline)) void dwf_put(__m256 o, float *out, const float *end, int n, int clamp,
                                                          __m256 lo, __m256 hi)
{
    if (clamp)   /* max(lo, o), min(hi, .): a NaN in o passes through, as in decaf_act_clamp */
        o = _mm256_min_ps(hi, _mm256_max_ps(lo, o));
    if (out + 8 <= end)
        _mm256_storeu_ps(out, o);
    else
        _mm256_maskstore_ps(out, dwf_mask(n), o);
}

/* 3x3 at stride 2: the 8 columns ow0 .. ow0 + 8 of output rows ob .. oe. The buffer holds each
 * padded row split into its even and odd columns (dwf_fill), so window column j of the 8 outputs
 * is one load: the even half at ow0 (j = 0), the odd half at ow0 (j = 1), the even half at ow0 + 1
 * (j = 2). Output row oh reads input rows 2 oh, 2 oh + 1 and 2 oh + 2; the last of these is the
 * next output row's first, so its 3 vectors are loaded once and give two partial sums (window rows
 * 2 and 0). As in dwf_strip_k, the weights stay in registers, each partial is a multiply and two
 * FMAs, and the partials of a row are added at the end (so the last bits differ from the
 * reference's). Against the 2 x 4 and 4 x 2 tiles, Zen 4 with AVX2, 1 thread: 1.16-1.32x at batch 1
 * (112- to 14-wide inputs; 2 threads 1.19-1.23x). Not on the inputs that are prefetched (8 MB and
 * more: batch 4 and 16 of MobileNet's 112-wide layers): there the strips, each prefetching its share
 * of the next plane, ran 0.89-0.96x the tiles, so those keep the tiles. */
static inline __attribute__((always_inline)) void dwf_strip3s2(
    const float *buf, const dwf_layout *L, const float *wc, float *yp, int Ho, int Wo, int ow0, int ob, int oe,
    __m256 bias, int clamp, __m256 lo, __m256 hi)
{
    const ptrdiff_t rs = L->rs, half = L->half;
    const __m256 w0 = _mm256_broadcast_ss(wc), w1 = _mm256_broadcast_ss(wc + 1), w2 = _mm256_broadcast_ss(wc + 2);
    const __m256 w3 = _mm256_broadcast_ss(wc + 3), w4 = _mm256_broadcast_ss(wc + 4), w5 = _mm256_broadcast_ss(wc + 5);
    const __m256 w6 = _mm256_broadcast_ss(wc + 6), w7 = _mm256_broadcast_ss(wc + 7), w8 = _mm256_broadcast_ss(wc + 8);
    const float *end = yp + (ptrdiff_t)Ho * Wo;   /* (the plane's end: dwf_put) */
    const float *row = buf + (ptrdiff_t)2 * ob * rs + ow0;
    __m256 x0 = _mm256_loadu_ps(row), x1 = _mm256_loadu_ps(row + half), x2 = _mm256_loadu_ps(row + 1);
    __m256 a = _mm256_add_ps(_mm256_fmadd_ps(x2, w2, _mm256_fmadd_ps(x1, w1, _mm256_mul_ps(x0, w0))), bias);
    float *out = yp + (ptrdiff_t)ob * Wo + ow0;
    _Pragma("GCC unroll 1") for (int oh = ob; oh < oe; ++oh, out += Wo) {
        row += rs;
        x0 = _mm256_loadu_ps(row), x1 = _mm256_loadu_ps(row + half), x2 = _mm256_loadu_ps(row + 1);
        __asm__("" : "+x"(x0), "+x"(x1), "+x"(x2));
        __m256 p1 = _mm256_fmadd_ps(x2, w5, _mm256_fmadd_ps(x1, w4, _mm256_mul_ps(x0, w3)));
        row += rs;
        x0 = _mm256_loadu_ps(row), x1 = _mm256_loadu_ps(row + half), x2 = _mm256_loadu_ps(row + 1);
        __asm__("" : "+x"(x0), "+x"(x1), "+x"(x2));
        const __m256 p2 = _mm256_fmadd_ps(x2, w8, _mm256_fmadd_ps(x1, w7, _mm256_mul_ps(x0, w6)));
        const __m256 pn = _mm256_fmadd_ps(x2, w2, _mm256_fmadd_ps(x1, w1, _mm256_mul_ps(x0, w0)));
        dwf_put(_mm256_add_ps(_mm256_add_ps(a, p1), p2), out, end, Wo - ow0, clamp, lo, hi);
        a = _mm256_add_ps(pn, bias);
    }
}

/* Stride 1 (3x3 on every plane, 5x5 and 7x7 on planes wider than 8): the 8 columns ow0 .. ow0 + 8
 * of every output row, walking the input rows down once. Input row ir (its K vectors x[j] at
 * columns ow0 + j, loaded once) feeds output rows ir .. ir - K + 1 through the window's rows
 * 0 .. K - 1: the partial of window row m is a multiply and K - 1 FMAs, and the rows add up across
 * the walk: a[0] (row ir's partial 0, plus the bias) becomes a[1] with the next row's partial 1,
 * and so on; row ir - K + 1 is completed with its last partial and stored. So what one row waits
 * for from the rows before is an add, not a chain of FMAs. The weights (wv: broadcast once per
 * plane; GCC keeps the 9 of a 3x3 window in registers, and reads what does not fit as FMA operands
 * from L1) are not reloaded per tap. An output is then the sum of its window rows' partials and the
 * bias, in float32 with FMAs: not the reference's order and rounding, so its last bits differ.
 * Against the former strips of 2 vectors (multiply then add in (i, j) order, the weights broadcast
 * at each use), AMD Zen 4 with AVX2, batch 1, 1 thread: 3x3 1.30x on 112 x 112 planes, 1.50-1.53x
 * at 56 x 56, 1.31x at 14 x 14, 1.20x at 7 x 7 (against the 8-row tiles there); against the tiles,
 * 5x5 1.21-1.50x and 7x7 1.05-1.31x (7 x 7 planes keep the tiles: 5x5 strips ran 0.76x there). The
 * same strip with one chain of K K FMAs per output (GCC folding each input load into its FMAs) ran
 * 1.2-1.25x for 3x3. */
static inline __attribute__((always_inline)) void dwf_strip_k(
    const float *buf, const dwf_layout *L, const __m256 *wv, const int K, float *yp, int Ho, int Wo, int ow0,
    __m256 bias, int clamp, __m256 lo, __m256 hi, const int PF, const char **pf, const char *pf_end)
{
    const ptrdiff_t rs = L->rs;
    const float *end = yp + (ptrdiff_t)Ho * Wo;   /* (the plane's end: dwf_put) */
    __m256 a[6];
    _Pragma("GCC unroll 6") for (int m = 0; m < K - 1; ++m) a[m] = _mm256_setzero_ps();
    const float *row = buf + ow0;
    float *out = yp + ow0 - (K - 1) * (ptrdiff_t)Wo;   /* output row ir - K + 1 */
    _Pragma("GCC unroll 1") for (int ir = 0; ir < Ho + K - 1; ++ir, row += rs, out += Wo) {
        if (PF)
            dwf_prefetch_lines(pf, pf_end, 1);
        __m256 x[7];
        _Pragma("GCC unroll 7") for (int j = 0; j < K; ++j) x[j] = _mm256_loadu_ps(row + j);
        _Pragma("GCC unroll 7") for (int j = 0; j < K; ++j) __asm__("" : "+x"(x[j]));
        /* the partial of window row m: sum over j of x[j] wv[K m + j] */
#define DWF_PART(m, p)                                                                     \
        do {                                                                               \
            p = _mm256_mul_ps(x[0], wv[K * (m)]);                                          \
            _Pragma("GCC unroll 6") for (int j = 1; j < K; ++j) p = _mm256_fmadd_ps(x[j], wv[K * (m) + j], p); \
        } while (0)
        __m256 p;
        if (ir >= K - 1) {
            DWF_PART(K - 1, p);
            dwf_put(_mm256_add_ps(a[K - 2], p), out, end, Wo - ow0, clamp, lo, hi);
        }
        _Pragma("GCC unroll 6") for (int m = K - 2; m > 0; --m) {
            DWF_PART(m, p);
            a[m] = _mm256_add_ps(a[m - 1], p);
        }
        DWF_PART(0, p);
        a[0] = _mm256_add_ps(bias, p);
#undef DWF_PART
    }
}

/* One plane, K and S constants. */
static inline __attribute__((always_inline)) void dwf_plane(
    const float *buf, const dwf_layout *L, const float *wc, const int K, const int S, float *yp, int Ho, int Wo,
    __m256 bias, int clamp, __m256 lo, __m256 hi, const int PF, const float *next, ptrdiff_t next_n, int ob, int oe)
{
    const int nv = (Wo + 7) / 8;
    const char *pf = (const char *)next, *pf_end = (const char *)(next + next_n);
    if (S == 1 && (K == 3 || nv > 1)) {   /* strips right to left (the whole plane: ob 0, oe Ho) */
        __m256 wv[49];
        for (int t = 0; t < K * K; ++t) wv[t] = _mm256_broadcast_ss(wc + t);
        for (int ow0 = (nv - 1) * 8; ow0 >= 0; ow0 -= 8)
            dwf_strip_k(buf, L, wv, K, yp, Ho, Wo, ow0, bias, clamp, lo, hi, PF, &pf, pf_end);
        return;
    }
    if (S == 2 && K == 3 && !PF) {   /* strips right to left over the band's rows (see dwf_strip3s2) */
        for (int ow0 = (nv - 1) * 8; ow0 >= 0; ow0 -= 8)
            dwf_strip3s2(buf, L, wc, yp, Ho, Wo, ow0, ob, oe, bias, clamp, lo, hi);
        return;
    }
    /* lines to prefetch per tile: the plane's tiles (8 x 1 vector, 4 x 2 or 2 x 4: below) cover them all */
    const int rows = oe - ob;
    const int tiles = nv == 1 ? (rows + 7) / 8
                      : S == 2 && K == 3 && nv >= 4 ? (rows + 1) / 2 * ((nv + 3) / 4)
                                                    : (rows + 3) / 4 * ((nv + 1) / 2);
    const int step = (int)(((pf_end - pf) / 64 + tiles) / tiles);
#define DWF_TILE(R, V) dwf_tile(buf, L, wc, K, S, R, V, yp, Ho, Wo, oh0, ow0, bias, clamp, lo, hi)
    if (nv == 1) {
        for (int oh0 = ob, ow0 = 0; oh0 < oe; oh0 += 8) {
            if (PF)
                dwf_prefetch_lines(&pf, pf_end, step);
            switch (oe - oh0 < 8 ? oe - oh0 : 8) {
            case 1: DWF_TILE(1, 1); break;
            case 2: DWF_TILE(2, 1); break;
            case 3: DWF_TILE(3, 1); break;
            case 4: DWF_TILE(4, 1); break;
            case 5: DWF_TILE(5, 1); break;
            case 6: DWF_TILE(6, 1); break;
            case 7: DWF_TILE(7, 1); break;
            default: DWF_TILE(8, 1); break;
            }
        }
        return;
    }
    /* The column tiles of a band run right to left, so that the extra lanes of a row's partial
     * last vector (stored whole) are overwritten by the next row's first vector afterwards. Tiles of
     * TR rows x TV vectors: 2 x 4 at stride 2 for 3x3 windows on rows of 4 vectors or more (7-11 %
     * faster there than 4 x 2), else 4 x 2 (3 x 4, 6 x 2 were slower); the last nv % TV vectors in
     * tiles of their own. (TR, TV literal in each expansion: tiles of variable shape ran 2x slower.) */
#define DWF_TILES_R(TR, V)                                                                                  \
    switch (R) {                                                                                           \
    case 1: DWF_TILE(1, V); break;                                                                         \
    case 2: DWF_TILE(2, V); break;                                                                         \
    case 3: DWF_TILE(3 < TR ? 3 : TR, V); break;                                                           \
    default: DWF_TILE(TR, V); break;                                                                       \
    }
#define DWF_BANDS(TR, TV)                                                                                  \
    for (int oh0 = ob; oh0 < oe; oh0 += TR) {                                                              \
        const int R = oe - oh0 < TR ? oe - oh0 : TR, rest = nv % TV;                                       \
        if (rest) {                                                                                        \
            const int ow0 = (nv - rest) * 8;                                                               \
            if (PF)                                                                                        \
                dwf_prefetch_lines(&pf, pf_end, step);                                                     \
            switch (rest) {                                                                                \
            case 1: DWF_TILES_R(TR, 1); break;                                                             \
            case 2: DWF_TILES_R(TR, 2 < TV ? 2 : 1); break;                                                \
            default: DWF_TILES_R(TR, 3 < TV ? 3 : 1); break;                                               \
            }                                                                                              \
        }                                                                                                  \
        for (int ow0 = (nv - rest - TV) * 8; ow0 >= 0; ow0 -= 8 * TV) {                                    \
            if (PF)                                                                                        \
                dwf_prefetch_lines(&pf, pf_end, step);                                                     \
            DWF_TILES_R(TR, TV);                                                                           \
        }                                                                                                  \
    }
    if (S == 2 && K == 3 && nv >= 4) {
        DWF_BANDS(2, 4)
    } else {
        DWF_BANDS(4, 2)
    }
#undef DWF_BANDS
#undef DWF_TILES_R
#undef DWF_TILE
}

typedef void (*dwf_plane_fn)(const float *, const dwf_layout *, const float *, float *, int, int, __m256, int,
                             __m256, __m256, const float *, ptrdiff_t, int, int);

/* dwf_plane_K_S_PF: with (PF 1) and without the prefetches (the code for them, even unused, cost
 * small planes 5-10 %) */
#define DWF_PLANE_FN(K, S, PF)                                                                             \
    static void dwf_plane_##K##_##S##_##PF(const float *buf, const dwf_layout *L, const float *wc, float *yp, \
                                           int Ho, int Wo, __m256 bias, int clamp, __m256 lo, __m256 hi,  \
                                           const float *next, ptrdiff_t next_n, int ob, int oe)           \
    {                                                                                                      \
        dwf_plane(buf, L, wc, K, S, yp, Ho, Wo, bias, clamp, lo, hi, PF, next, next_n, ob, oe);            \
    }
DWF_PLANE_FN(3, 1, 0)
DWF_PLANE_FN(3, 2, 0)
DWF_PLANE_FN(5, 1, 0)
DWF_PLANE_FN(5, 2, 0)
DWF_PLANE_FN(3, 1, 1)
DWF_PLANE_FN(3, 2, 1)
DWF_PLANE_FN(5, 1, 1)
DWF_PLANE_FN(5, 2, 1)
DWF_PLANE_FN(7, 1, 0)
DWF_PLANE_FN(7, 1, 1)
#undef DWF_PLANE_FN

/* The fast path; 0 (nothing done) for a shape it does not cover or without memory. */
static int dwf_forward(const float *x, const float *w, const float *bias, float *y, int B, int C, int H, int W,
                       int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top, int pad_left, int dil_h,
                       int dil_w, const decaf_epilogue *ep, float *means)
{
    if (kh != kw || (kh != 3 && kh != 5 && !(kh == 7 && sh == 1)) || sh != sw || (sh != 1 && sh != 2) ||
        dil_h != 1 || dil_w != 1 ||
        Ho <= 0 || Wo <= 0)
        return 0;
    const int K = kh, S = sh;
    const dwf_layout L = dwf_make_layout(K, S, W, Ho, Wo, pad_left);
    /* per thread: lead, the rows, 8 (the split copy's last store), rounded up to 8 floats */
    const size_t size = ((size_t)L.lead + (size_t)L.rows * (size_t)L.rs + 8 + 7) / 8 * 8;
    const ptrdiff_t planes = (ptrdiff_t)B * C;
    const int nt = decaf_threads_for(planes * Ho * Wo * K * K);
    void *mem = malloc(sizeof(float) * size * (size_t)nt + 32);
    if (!mem)
        return 0;
    float *bufs = (float *)(((uintptr_t)mem + 31) & ~(uintptr_t)31);
    /* a clamp with nothing before it (no residual) and into y itself goes into the stores */
    const int clamp = decaf_epilogue_is_clamp(ep);
    const __m256 lo = _mm256_set1_ps(clamp ? ep->lo : 0.0f), hi = _mm256_set1_ps(clamp ? ep->hi : 0.0f);
    const int rest = ep && !clamp && (ep->act != DECAF_ACT_NONE || ep->residual);
    /* the next plane prefetched on inputs of 8 MB and more with planes not tiny (28 x 28 and up):
     * 5-17 % faster there (MobileNetV2 at batch 16: 9.6 to 77 MB). On Zen 3 it was 2-8 % slower on
     * a 3.2 MB input (its planes come from L3 fast enough) and on 14 x 14 or 7 x 7 planes. */
    const int prefetch = (size_t)planes * H * W * sizeof(float) >= ((size_t)8 << 20) && H * W >= 512;
    const dwf_plane_fn plane = K == 7 ? (prefetch ? dwf_plane_7_1_1 : dwf_plane_7_1_0)   /* (stride 1 only) */
                               : prefetch ? (K == 3 ? (S == 1 ? dwf_plane_3_1_1 : dwf_plane_3_2_1)
                                                    : (S == 1 ? dwf_plane_5_1_1 : dwf_plane_5_2_1))
                                          : (K == 3 ? (S == 1 ? dwf_plane_3_1_0 : dwf_plane_3_2_0)
                                                    : (S == 1 ? dwf_plane_5_1_0 : dwf_plane_5_2_0));
    /* Planes handed out in chunks as the threads ask (about 64k multiply-adds each): on a shared
     * machine a thread that loses its core for a while leaves its planes to the others, where a
     * static split waited for it (then the layer took up to twice as long). */
    const ptrdiff_t per_plane = (ptrdiff_t)Ho * Wo * K * K;
    /* A plane in bands of output rows (a multiple of 8), each copied into the buffer just before it
     * is computed, so that the tiles read rows still in L1 (about 16 kB of buffer rows per band):
     * 12-35 % faster at stride 2 on 56- and 112-wide planes, where the whole padded plane (50 kB)
     * had left L1 by the time the tiles read it. The stride-1 strips (3x3 on every plane, 5x5 and
     * 7x7 on planes wider than 8: dwf_plane) walk the whole plane (in bands they would redo K - 1
     * rows each; tiles in bands instead were no faster); the stride-2 strips work in the bands. */
    int band = Ho;
    if (!(S == 1 && (K == 3 || Wo > 8))) {   /* (the same rule as dwf_plane's stride-1 strips) */
        const int in_rows = (int)(16384 / (L.rs * (ptrdiff_t)sizeof(float)));
        band = (in_rows - K) / S + 1;
        band = band < 8 ? 8 : band / 8 * 8;
    }
    /* (and at least 4 chunks per thread: 7 chunks of 7 x 7 planes left one thread a chunk more,
     * 14 % slower; 16 per thread cost the short layers of batch 1 the threads' handing out). With
     * the prefetch, 4 planes a chunk, the next plane prefetched only inside the chunk: one plane a
     * chunk, the threads took turns and each prefetched the plane the other one was reading. */
    ptrdiff_t chunk = per_plane >= 65536 ? 1 : 65536 / per_plane;
    if (prefetch && chunk < 4)
        chunk = 4;
    if (chunk > planes / (4 * nt))
        chunk = planes / (4 * nt) > 1 ? planes / (4 * nt) : 1;
    const ptrdiff_t chunks = (planes + chunk - 1) / chunk;
    #pragma omp parallel num_threads(nt)
    {
        float *buf = bufs + (size_t)decaf_thread_num() * size;
        memset(buf, 0, sizeof(float) * size);
        buf += L.lead;
        #pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t ch = 0; ch < chunks; ++ch)
        for (ptrdiff_t bc = ch * chunk; bc < (ch + 1) * chunk && bc < planes; ++bc) {
            const float *next = x + (bc + 1) * H * W;   /* (prefetched if prefetch) */
            const ptrdiff_t next_n = bc + 1 < (ch + 1) * chunk && bc + 1 < planes ? (ptrdiff_t)H * W : 0;
            const __m256 bv = _mm256_set1_ps(bias ? bias[bc % C] : 0.0f);
            if (band >= Ho) {   /* (small planes: no divisions) */
                dwf_fill(x + bc * H * W, H, W, pad_top, pad_left, S, buf, &L, 0, L.rows, x + planes * H * W);
                plane(buf, &L, w + (bc % C) * K * K, y + bc * Ho * Wo, Ho, Wo, bv, clamp, lo, hi, next, next_n, 0, Ho);
            } else {
                for (int ob = 0, filled = 0; ob < Ho; ob += band) {
                    const int oe = Ho - ob < band ? Ho : ob + band, need = (oe - 1) * S + K;
                    dwf_fill(x + bc * H * W, H, W, pad_top, pad_left, S, buf, &L, filled, need, x + planes * H * W);
                    filled = need;
                    const ptrdiff_t n0 = next_n * ob / Ho, n1 = next_n * oe / Ho;   /* this band's share */
                    plane(buf, &L, w + (bc % C) * K * K, y + bc * Ho * Wo, Ho, Wo, bv, clamp, lo, hi, next + n0,
                          n1 - n0, ob, oe);
                }
            }
            if (rest)
                decaf_epilogue_at(ep, y, bc * Ho * Wo, (ptrdiff_t)Ho * Wo, 0.0f);   /* (the bias is in) */
            if (means) {   /* the finished plane's mean while it is in L1 / L2 (the activation's output) */
                const float *out = decaf_epilogue_out(ep, bc * Ho * Wo);
                means[bc] = decaf_plane_mean(out ? out : y + bc * Ho * Wo, (ptrdiff_t)Ho * Wo);
            }
        }
    }
    free(mem);
    return 1;
}
#endif

/* The other paths: the tiles of dw_plane, else plain loops. */
static void dw_other(const float *x, const float *w, const float *bias, float *y, int B, int C, int H, int W,
                     int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top, int pad_left, int dil_h, int dil_w,
                     const decaf_epilogue *ep)
{
    const ptrdiff_t planes = (ptrdiff_t)B * C;
#ifdef DW_SIMD
    if (sw <= 2 && dil_w == 1) {   /* MobileNet / EfficientNet's depthwise layers */
        const int V = dw_vectors(Wo), R = DW_ACC / V, L = DW_LANES;
        const int rows = (Ho + R - 1) / R * R, cols = (Wo + L * V - 1) / (L * V) * L * V;
        /* the padded plane covers every row and column a tile reads, rounded-up tiles included
         * (stride 2 reads 2 L columns per vector) */
        const int Hp = (rows - 1) * sh + (kh - 1) * dil_h + 1;
        const int Wp = (cols - L) * sw + kw - 1 + L * sw;
        const int nt = decaf_threads_for(planes * Ho * Wo * kh * kw);
        float *bufs = malloc(sizeof(float) * (size_t)Hp * Wp * (size_t)nt);
        if (bufs) {   /* (without memory for the buffers, the scalar loops below run instead) */
            #pragma omp parallel num_threads(nt)
            {
                float *buf = bufs + (ptrdiff_t)decaf_thread_num() * Hp * Wp;
                #pragma omp for schedule(static)
                for (ptrdiff_t bc = 0; bc < planes; ++bc) {
                    decaf_pad_plane(x + bc * H * W, H, W, pad_top, pad_left, buf, Hp, Wp);
                    dw_plane(buf, Wp, w + (bc % C) * kh * kw, kh, kw, sh, sw, dil_h, bias ? bias[bc % C] : 0.0f,
                             y + bc * Ho * Wo, Ho, Wo);
                    decaf_epilogue_at(ep, y, bc * Ho * Wo, (ptrdiff_t)Ho * Wo, 0.0f);   /* (the bias is in) */
                }
            }
            free(bufs);
            return;
        }
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
        for (int p = 0; p < Ho * Wo; ++p) yp[p] += bias ? bias[bc % C] : 0.0f;
        decaf_epilogue_at(ep, y, bc * Ho * Wo, (ptrdiff_t)Ho * Wo, 0.0f);
    }
}

void decaf_depthwise_conv_forward(const float *x, const float *w, const float *bias, float *y, int B, int C,
                                  int H, int W, int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top,
                                  int pad_left, int dil_h, int dil_w, const decaf_epilogue *ep, float *means)
{
#ifdef DW_FAST
    if (dwf_forward(x, w, bias, y, B, C, H, W, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left, dil_h, dil_w, ep, means))
        return;
#endif
    dw_other(x, w, bias, y, B, C, H, W, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left, dil_h, dil_w, ep);
    if (means) {   /* (these paths: the global average pooling of the finished output, a pass of its own) */
        const float *out = decaf_epilogue_out(ep, 0);
        decaf_avg_pool_forward(out ? out : y, means, B, C, Ho, Wo, 1, 1, Ho, Wo, 1, 1, 0, 0, 0, 0, 1);
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
