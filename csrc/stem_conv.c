#include "stem_conv.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define STEM_SIMD 1
#endif

#include "activation.h"
#include "threads.h"

/* How it works. A stem convolution has only C * KS^2 multiply-adds per output value (27 for a 3x3
 * window on 3 channels, 147 for ResNet's 7x7), so im2col + GEMM spends much of its time writing and
 * re-reading the cols buffer (27 rows, 1.35 MB an image at 224x224, past the L2) and its GEMM
 * (inner dimension 27) runs short. Here the output
 * pixels are in the vector lanes and the inputs are read from a few split rows that stay in L1.
 *
 * Split rows. Input row ih of channel c, zero-padded (padded column q = iw + pad_left), is stored
 * once per phase of the stride S: phase f holds padded columns f, f + S, f + 2S, ... . Output
 * pixel ow reads padded column S ow + j for tap j, which is element ow + j / S of phase j % S:
 * consecutive output pixels read consecutive floats (stride 2 needs no gather). The padding is in
 * the split rows, so no tap needs a bound check; rows above and below the image are zeros. A row
 * is copied zero-padded into a small buffer, then deinterleaved 16 columns at a time (AVX2). A
 * thread keeps a ring of 3 split rows (padded row r in slot r % 3): with stride 2, output row oh
 * reads padded rows 2 oh .. 2 oh + 2 and the next output row reuses row 2 oh + 2, so each input row
 * is split once (twice at a band's edge); the input rows the next output row needs are prefetched.
 * The ring is 3 C S rows of Wo + 8..15 floats: 8.6 KB for the 3-channel 224x224 stem, in L1 with
 * the weights (K * 28 floats: 3.6 KB at K = 32) and the output row segments being written. A KS x KS
 * window (5x5, 7x7) keeps a ring of KS rows the same way (7x7 stride 2: 20 KB; its weights, 147 a
 * channel, 37 KB at K = 64, are read a block of 4 channels at a time from L2).
 *
 * Register tile (AVX2 + FMA): 4 output channels x 24 pixels, 12 accumulators of 8 lanes started
 * at the bias; per tap (c, i, j), 3 loads from a split row, 4 broadcasts of the block's weights
 * (packed so that a tap's 4 weights are consecutive), 12 FMAs. The row's last pixels: a tile of
 * 16 or 8 (fewer accumulators), the last vector stored under a mask (the split rows are long
 * enough that full vectors can always be loaded). A last block of fewer than 4 channels computes 4
 * (zero weights) and stores the real ones.
 *
 * Epilogue. The row loop exists once per activation kind (the kind a constant in it): the tile
 * applies the activation in the registers before its stores (clamp, leaky, hardswish,
 * hardsigmoid; no branch on the kind). SiLU and sigmoid (their exponential in the tile ran
 * slower), a residual, or a second output: the tile stores the convolution and each block's 4
 * finished output rows get decaf_epilogue_at while in L1. Outputs past the last-level cache are
 * stored streaming (the activation in the registers only).
 *
 * Order and threads: per output row, the channel blocks, each over the row's tiles. The work is cut
 * in tasks (image, band of output rows), image-major, a contiguous run of tasks per thread: at
 * batch >= threads whole images per thread, at batch 1 bands of rows so that every thread has work.
 *
 * The generic variant computes the same order with plain loops on tiles of 8 pixels (GCC
 * vectorises them for SSE2) and the row epilogue; it is not preferred (decaf_stem_conv_preferred). */

enum { STEM_R = 4, STEM_MAX_KS = 7, STEM_MAX_C = 4 };


typedef struct {
    int KS;            /* the window's side: 3, 5 or 7 */
    int S;             /* stride */
    ptrdiff_t L;       /* floats of one phase of one split row: Wo rounded up to 8, plus 8 */
    ptrdiff_t row;     /* floats of one split row, all channels and phases: C S L */
    ptrdiff_t ring;    /* floats of a thread's scratch: a ring of KS split rows, a padded row */
    int blocks;        /* blocks of 4 output channels */
    ptrdiff_t weights; /* floats of the packed weights (the packed bias follows: blocks * 4) */
} stem_layout;

static stem_layout layout_of(const decaf_conv_geom *g)
{
    stem_layout l;
    l.KS = g->kh;
    l.S = g->sw;
    l.L = (ptrdiff_t)((g->Wo + 7) / 8) * 8 + 8;   /* (tap offsets j / S <= 6 past a vector's end) */
    l.row = (ptrdiff_t)g->C * l.S * l.L;
    l.ring = l.KS * l.row + l.S * l.L;   /* (and the zero-padded copy of a row: split_row) */
    l.blocks = (g->K + STEM_R - 1) / STEM_R;
    l.weights = (ptrdiff_t)l.blocks * STEM_R * g->C * l.KS * l.KS;
    return l;
}

int decaf_stem_conv_supported(const decaf_conv_geom *g)
{
    return g->G == 1 && g->C >= 1 && g->C <= STEM_MAX_C && g->K >= 1 && g->kh == g->kw
           && (g->kh == 3 || g->kh == 5 || g->kh == 7)
           && g->dh == 1 && g->dw == 1 && g->sh == g->sw && (g->sh == 1 || g->sh == 2)
           && g->pad_top >= 0 && g->pad_top < g->kh && g->pad_left >= 0 && g->pad_left < g->kw
           && g->Ho >= 1 && g->Wo >= 1;
}

ptrdiff_t decaf_stem_conv_work_size(const decaf_conv_geom *g, int threads)
{
    const stem_layout l = layout_of(g);
    return l.weights + (ptrdiff_t)l.blocks * STEM_R + (ptrdiff_t)(threads < 1 ? 1 : threads) * l.ring;
}

/* wp[kb][t][r] = w[4 kb + r][t] for tap t = (c * KS + i) * KS + j (0 past K); bp[4 kb + r] = bias. */
static void pack(const decaf_conv_geom *g, const stem_layout *l, const float *w, const float *bias, float *wp)
{
    const int taps = g->C * l->KS * l->KS;
    float *bp = wp + l->weights;
    for (int kb = 0; kb < l->blocks; ++kb)
        for (int r = 0; r < STEM_R; ++r) {
            const int k = kb * STEM_R + r;
            for (int t = 0; t < taps; ++t)
                wp[((ptrdiff_t)kb * taps + t) * STEM_R + r] = k < g->K ? w[(ptrdiff_t)k * taps + t] : 0.0f;
            bp[k] = k < g->K && bias ? bias[k] : 0.0f;
        }
}

/* dst (one split row) = padded row r of image x (C, H, W), every channel and phase: element m of
 * phase f is padded column S m + f, i.e. x's column S m + f - pad_left, 0 outside the row. The row
 * is first copied, zero-padded, into pad (S L floats; with stride 1 that is the split row itself),
 * then deinterleaved 16 columns at a time: no bound check per element. */
static void split_row(float *dst, float *pad, const float *x, const decaf_conv_geom *g, const stem_layout *l, int r)
{
    const int S = l->S, W = g->W, ih = r - g->pad_top, pl = g->pad_left;
    const ptrdiff_t L = l->L, n = S * L;
    const ptrdiff_t keep = W < n - pl ? W : n - pl, tail = n - pl - keep;   /* (columns past n are never read) */
    for (int c = 0; c < g->C; ++c) {
        float *d0 = dst + (ptrdiff_t)c * S * L;
        if (ih < 0 || ih >= g->H) {
            memset(d0, 0, sizeof(float) * (size_t)n);
            continue;
        }
        float *p = S == 1 ? d0 : pad;
        for (int q = 0; q < pl; ++q) p[q] = 0.0f;
        memcpy(p + pl, x + ((ptrdiff_t)c * g->H + ih) * W, sizeof(float) * (size_t)keep);
        memset(p + pl + keep, 0, sizeof(float) * (size_t)tail);
        if (S == 1)
            continue;
        ptrdiff_t m = 0;
#ifdef STEM_SIMD
        for (; m + 8 <= L; m += 8) {
            const __m256 a = _mm256_loadu_ps(pad + 2 * m), b = _mm256_loadu_ps(pad + 2 * m + 8);
            /* (a0 a2 b0 b2 | a4 a6 b4 b6): its 64-bit pieces in the order 0 2 1 3 */
            const __m256 ev = _mm256_shuffle_ps(a, b, 0x88), od = _mm256_shuffle_ps(a, b, 0xDD);
            _mm256_storeu_ps(d0 + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
            _mm256_storeu_ps(d0 + L + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8)));
        }
#endif
        for (; m < L; ++m) {
            d0[m] = pad[2 * m];
            d0[L + m] = pad[2 * m + 1];
        }
    }
}

#ifdef STEM_SIMD
/* Lanes 0 .. n - 1 of a mask (n <= 8). */
static inline __m256i lanes(int n)
{
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

/* The activation's constants, broadcast, for act8. */
typedef struct {
    __m256 lo, hi, alpha;
} stem_epilogue;

/* activation.h's cheap activations on 8 lanes, written as its scalar selects are (a NaN stays NaN:
 * max / min return their second operand when one is NaN, the compares are false). SiLU and sigmoid
 * are not done here (see rows_for). */
static inline __attribute__((always_inline)) __m256 act8(const stem_epilogue *e, __m256 v, const int act)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    switch (act) {
    case DECAF_ACT_CLAMP: return _mm256_min_ps(e->hi, _mm256_max_ps(e->lo, v));
    case DECAF_ACT_LEAKY:
        return _mm256_mul_ps(v, _mm256_blendv_ps(one, e->alpha, _mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
    case DECAF_ACT_HARDSWISH: {
        const __m256 a = _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(zero, _mm256_add_ps(v, _mm256_set1_ps(3.0f))));
        return _mm256_div_ps(_mm256_mul_ps(a, v), _mm256_set1_ps(6.0f));
    }
    case DECAF_ACT_HARDSIGMOID:
        return _mm256_min_ps(e->hi, _mm256_max_ps(zero, _mm256_fmadd_ps(v, e->alpha, e->lo)));
    default: return v;
    }
}

/* v into p: 8 floats (full: by a streaming store when asked and p is 32-byte aligned), or the
 * lanes of mask m. */
static inline __attribute__((always_inline)) void put(float *p, __m256 v, int full, __m256i m, int stream)
{
    if (!full) _mm256_maskstore_ps(p, m, v);
    else if (stream && !((uintptr_t)p & 31)) _mm256_stream_ps(p, v);
    else _mm256_storeu_ps(p, v);
}

/* 4 channels x nv vectors (nv <= 3, a constant where inlined) of pixels ow ..: tp[t] + ow is tap
 * t's split row at the tile, wk the block's packed weights, bk its 4 biases; the first channel's
 * output at offset `at` of y (channel planes `plane` apart); kr <= 4 real channels, n <= 8 nv real
 * pixels; then the activation act (a constant) in the registers, stored into y (by streaming
 * stores where `stream`, a constant too). */
static inline __attribute__((always_inline)) void tile(const float *const *tp, int taps, ptrdiff_t ow,
                                                       const float *wk, const float *bk, float *y, ptrdiff_t at,
                                                       ptrdiff_t plane, int kr, int n, const int nv,
                                                       const stem_epilogue *e, const int act, const int stream)
{
    /* (every loop over r and v unrolled, indices constant: the arrays stay in registers) */
    __m256 a[STEM_R][3];
    #pragma GCC unroll 4
    for (int r = 0; r < STEM_R; ++r)
        #pragma GCC unroll 3
        for (int v = 0; v < 3; ++v)
            if (v < nv) a[r][v] = _mm256_broadcast_ss(bk + r);
    for (int t = 0; t < taps; ++t) {
        const float *s = tp[t] + ow;
        __m256 xv[3];
        #pragma GCC unroll 3
        for (int v = 0; v < 3; ++v)
            if (v < nv) xv[v] = _mm256_loadu_ps(s + 8 * v);
        #pragma GCC unroll 4
        for (int r = 0; r < STEM_R; ++r) {
            const __m256 w = _mm256_broadcast_ss(wk + STEM_R * t + r);
            #pragma GCC unroll 3
            for (int v = 0; v < 3; ++v)
                if (v < nv) a[r][v] = _mm256_fmadd_ps(xv[v], w, a[r][v]);
        }
    }
    const __m256i m = lanes(n - 8 * (nv - 1));   /* the last vector's real lanes */
    #pragma GCC unroll 4
    for (int r = 0; r < STEM_R; ++r)
        #pragma GCC unroll 3
        for (int v = 0; v < 3; ++v)
            if (r < kr && v < nv)
                put(y + at + r * plane + ow + 8 * v, act8(e, a[r][v], act), 8 * v + 8 <= n, m, stream);
}
#else
/* The same, 4 channels x n <= 8 pixels, plain loops. */
static void tile8(const float *const *tp, int taps, ptrdiff_t ow, const float *wk, const float *bk, float *yo,
                  ptrdiff_t plane, int kr, int n)
{
    float a[STEM_R][8];
    for (int r = 0; r < STEM_R; ++r)
        for (int q = 0; q < 8; ++q) a[r][q] = bk[r];
    for (int t = 0; t < taps; ++t) {
        const float *s = tp[t] + ow;
        for (int r = 0; r < STEM_R; ++r) {
            const float w = wk[STEM_R * t + r];
            for (int q = 0; q < 8; ++q) a[r][q] += w * s[q];
        }
    }
    for (int r = 0; r < kr; ++r)
        for (int q = 0; q < n; ++q) yo[r * plane + q] = a[r][q];
}
#endif

/* Output rows oh0 .. oh1 of image b (x its input), every channel, with a thread's ring. act and
 * stream are constants where inlined (each kind of epilogue has its own copy of the tiles, with no
 * branch on it): act >= 0, that activation (DECAF_ACT_*) applied in the registers, ep having no
 * residual and no second output; act < 0, the tiles store the convolution and ep is applied to
 * each block's finished rows by decaf_epilogue_at (in L1). */
static inline __attribute__((always_inline)) void rows_of(const decaf_conv_geom *g, const stem_layout *l,
                                                          const float *x, const float *wp, int b, int oh0, int oh1,
                                                          float *ring, float *y, const decaf_epilogue *ep,
                                                          const int act, const int stream)
{
    const int S = l->S, KS = l->KS, taps = g->C * KS * KS, Wo = g->Wo, K = g->K;
    const ptrdiff_t plane = (ptrdiff_t)g->Ho * Wo;
    const float *bp = wp + l->weights;
    int tags[STEM_MAX_KS];   /* the padded row in each slot */
    for (int i = 0; i < STEM_MAX_KS; ++i) tags[i] = -1;
    const float *tp[STEM_MAX_C * STEM_MAX_KS * STEM_MAX_KS];
#ifdef STEM_SIMD
    stem_epilogue e = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    if (ep)
        e.lo = _mm256_set1_ps(ep->lo), e.hi = _mm256_set1_ps(ep->hi), e.alpha = _mm256_set1_ps(ep->alpha);
    const int in_tile = act < 0 ? DECAF_ACT_NONE : act;
#else
    (void)stream;
#endif
    for (int oh = oh0; oh < oh1; ++oh) {
        for (int i = 0; i < KS; ++i) {
            const int r = oh * S + i, slot = r % KS;
            if (tags[slot] != r) {
                split_row(ring + slot * l->row, ring + l->ring - l->S * l->L, x, g, l, r);
                tags[slot] = r;
            }
            for (int c = 0; c < g->C; ++c)
                for (int j = 0; j < KS; ++j)
                    tp[(c * KS + i) * KS + j] = ring + slot * l->row + (ptrdiff_t)(c * S + j % S) * l->L + j / S;
        }
        /* The input rows the next output row splits, fetched into the cache now: each is short
         * (a few lines), the channels' planes far apart, so the hardware's prefetcher starts late
         * on them (without this the splits took 12 % of a 224x224 stem's time, on loads). */
        for (int r = oh * S + KS; r < (oh + 1) * S + KS && oh + 1 < oh1; ++r) {
            const int ih = r - g->pad_top;
            if (ih >= 0 && ih < g->H)
                for (int c = 0; c < g->C; ++c) {
                    const char *row = (const char *)(x + ((ptrdiff_t)c * g->H + ih) * g->W);
                    for (ptrdiff_t q = 0; q < (ptrdiff_t)g->W * (ptrdiff_t)sizeof(float); q += 64)
                        __builtin_prefetch(row + q, 0, 3);
                }
        }
        for (int kb = 0; kb < l->blocks; ++kb) {
            const int k0 = kb * STEM_R, kr = K - k0 < STEM_R ? K - k0 : STEM_R;
            const float *wk = wp + (ptrdiff_t)kb * taps * STEM_R, *bk = bp + k0;
            const ptrdiff_t at = ((ptrdiff_t)b * K + k0) * plane + (ptrdiff_t)oh * Wo;   /* channel k0's row oh */
            int ow = 0;
#ifdef STEM_SIMD
            for (; ow + 24 <= Wo; ow += 24)
                tile(tp, taps, ow, wk, bk, y, at, plane, kr, 24, 3, &e, in_tile, stream);
            const int left = Wo - ow;
            if (left > 16)
                tile(tp, taps, ow, wk, bk, y, at, plane, kr, left, 3, &e, in_tile, stream);
            else if (left > 8)
                tile(tp, taps, ow, wk, bk, y, at, plane, kr, left, 2, &e, in_tile, stream);
            else if (left > 0)
                tile(tp, taps, ow, wk, bk, y, at, plane, kr, left, 1, &e, in_tile, stream);
#else
            for (; ow < Wo; ow += 8)
                tile8(tp, taps, ow, wk, bk, y + at + ow, plane, kr, Wo - ow < 8 ? Wo - ow : 8);
#endif
            if (act < 0 && ep)   /* the epilogue on the block's rows, in L1 */
                for (int r = 0; r < kr; ++r) decaf_epilogue_at(ep, y, at + r * plane, Wo, 0.0f);
        }
    }
}

#define STEM_ROWS(name, act, stream)                                                                           \
    static void name(const decaf_conv_geom *g, const stem_layout *l, const float *x, const float *wp, int b, int oh0, \
                     int oh1, float *ring, float *y, const decaf_epilogue *ep)                                   \
    {                                                                                                        \
        rows_of(g, l, x, wp, b, oh0, oh1, ring, y, ep, act, stream);                                         \
    }
STEM_ROWS(rows_epilogue, -1, 0)
#ifdef STEM_SIMD
STEM_ROWS(rows_none, DECAF_ACT_NONE, 0)
STEM_ROWS(rows_clamp, DECAF_ACT_CLAMP, 0)
STEM_ROWS(rows_leaky, DECAF_ACT_LEAKY, 0)
STEM_ROWS(rows_hardswish, DECAF_ACT_HARDSWISH, 0)
STEM_ROWS(rows_hardsigmoid, DECAF_ACT_HARDSIGMOID, 0)
STEM_ROWS(rows_none_nt, DECAF_ACT_NONE, 1)
STEM_ROWS(rows_clamp_nt, DECAF_ACT_CLAMP, 1)
STEM_ROWS(rows_leaky_nt, DECAF_ACT_LEAKY, 1)
STEM_ROWS(rows_hardswish_nt, DECAF_ACT_HARDSWISH, 1)
STEM_ROWS(rows_hardsigmoid_nt, DECAF_ACT_HARDSIGMOID, 1)
#endif

typedef void (*rows_fn)(const decaf_conv_geom *, const stem_layout *, const float *, const float *, int, int, int,
                        float *, float *, const decaf_epilogue *);

/* The copy of the row loop for epilogue ep and output size (stream: its stores streamed). */
static rows_fn rows_for(const decaf_epilogue *ep, int stream)
{
#ifdef STEM_SIMD
    if (ep && (ep->residual || (ep->out && ep->act != DECAF_ACT_NONE)))
        return rows_epilogue;
    switch (ep ? ep->act : DECAF_ACT_NONE) {
    case DECAF_ACT_CLAMP: return stream ? rows_clamp_nt : rows_clamp;
    case DECAF_ACT_LEAKY: return stream ? rows_leaky_nt : rows_leaky;
    case DECAF_ACT_HARDSWISH: return stream ? rows_hardswish_nt : rows_hardswish;
    case DECAF_ACT_SILU:      /* (the exponential's polynomial in the tiles ran slower: 0.63 ms against */
    case DECAF_ACT_SIGMOID:   /* 0.54 for MobileNetV2's stem with SiLU, batch 1, 1 thread, Zen 3) */
    case DECAF_ACT_GELU:
        return rows_epilogue;
    case DECAF_ACT_HARDSIGMOID: return stream ? rows_hardsigmoid_nt : rows_hardsigmoid;
    default: return stream ? rows_none_nt : rows_none;
    }
#else
    (void)ep, (void)stream;
    return rows_epilogue;
#endif
}

/* Bands of output rows per image: 1 when the images share the threads evenly, else enough that
 * the (image, band) tasks do (or are many: 8 a thread). */
static int bands(const decaf_conv_geom *g, int T)
{
    int nb = 1;
    while (nb < g->Ho && ((ptrdiff_t)g->B * nb < T || ((ptrdiff_t)g->B * nb % T != 0 && (ptrdiff_t)g->B * nb < 8 * T)))
        ++nb;
    return nb;
}

void decaf_stem_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const stem_layout l = layout_of(g);
    const int T = threads < 1 ? 1 : threads, nb = bands(g, T);
    const ptrdiff_t tasks = (ptrdiff_t)g->B * nb, plane_in = (ptrdiff_t)g->C * g->H * g->W;
    float *rings = work + l.weights + (ptrdiff_t)l.blocks * STEM_R;
    /* (outputs past the last-level cache: streamed stores, as pointwise.c does; the knob forces them
     * for the tests. At batch 16 the 224x224 stems' outputs, 13-26 MB, stay below Zen 3's 32 MB:
     * streamed, MobileNetV2 / V3 and RegNetY-400MF took the same time within 1 %.) */
    const double bytes = (double)g->B * g->K * g->Ho * g->Wo * sizeof(float);
    const char *knob = getenv("DECAF_STEM_CONV");
    const int stream = bytes >= decaf_last_cache_bytes() || (knob && strcmp(knob, "stream") == 0);
    const rows_fn rows = rows_for(ep, stream);
    pack(g, &l, w, bias, work);
    #pragma omp parallel num_threads(T)
    {
        const int t = decaf_thread_num(), team = decaf_team_size();
        float *ring = rings + t * l.ring;
        for (ptrdiff_t task = tasks * t / team; task < tasks * (t + 1) / team; ++task) {
            const int b = (int)(task / nb), band = (int)(task % nb);
            rows(g, &l, x + b * plane_in, work, b, g->Ho * band / nb, g->Ho * (band + 1) / nb, ring, y, ep);
        }
#ifdef STEM_SIMD
        if (stream)
            _mm_sfence();   /* the streamed stores visible before the threads join */
#endif
    }
}

/* Preferred: 3x3 and 7x7 windows with K <= 64, in the AVX2 (and AVX-512) variants. Measured by
 * benchmarks/bench_stem.py (Zen 3, AVX2, im2col + OpenBLAS GEMM against this kernel, both prepared
 * once, best of 5-6 interleaved rounds; the machine shared, figures within ~20 %):
 *   224x224 stride 2 (the stems), batch 1 and 16, 1 and 2 threads: K 32 ReLU6 2.0-2.5x (batch 1,
 *   1 thread: 0.69 -> 0.32 ms, 69 GFLOP/s), K 16 hardswish 2.6-3.1x, K 24 ReLU 2.1-2.8x, K 32 SiLU
 *   1.5-1.6x (SiLU's own cost, about 0.25 ms an image on one thread, is the same in both);
 *   stride 1: 32x32 K 16 (CIFAR ResNets) 1.6-1.9x, 224x224 K 32 1.8-2.5x, K 64 1.9-2.3x;
 *   32x32 stride 2 K 32: 1.35-1.8x.
 * Inside the nets (decaf.profile, 2 threads), the stem layer: MobileNetV2 0.68 -> 0.22 ms at batch 1,
 * 6.4 -> 3.4 ms at batch 16; MobileNetV3 5.2 -> 2.0 ms, EfficientNet-B0 8.4 -> 5.8, RegNetY-400MF
 * 6.3 -> 3.4 at batch 16.
 * 7x7 (ResNet's, GoogLeNet's, DenseNet's stem: 3 -> 64, stride 2, pad 3, ReLU; 2026-12-08, AMD EPYC
 * family 25 model 17 (Zen 4), AVX2, against the plan without this kernel, i.e. the direct kernel;
 * bench_stem.py --wide, best of 5): batch 1 1.41x (1 thread, 40 -> 56 GFLOP/s) and 1.37x (2),
 * batch 16 1.21x and 1.36x. 5x5 windows are computed (tested) but not measured: not preferred.
 * Not measured past K = 64 (there the GEMM's share of the work grows and its efficiency with it):
 * im2col + GEMM stays. The generic variant's plain loops ran at 0.43-1.0x of im2col + GEMM (whose
 * OpenBLAS picks its own AVX2 kernels on this CPU): not preferred. The environment
 * variable DECAF_STEM_CONV overrides the rule (benchmarks, tests): "off" never, "on" (or "stream",
 * which also streams the stores) wherever supported. */
int decaf_stem_conv_preferred(const decaf_conv_geom *g, int threads)
{
    (void)threads;
    if (!decaf_stem_conv_supported(g))
        return 0;
    const char *knob = getenv("DECAF_STEM_CONV");
    if (knob && strcmp(knob, "off") == 0)
        return 0;
    if (knob && (strcmp(knob, "on") == 0 || strcmp(knob, "stream") == 0))
        return 1;
#ifdef STEM_SIMD
    return g->K <= 64 && (g->kh == 3 || g->kh == 7);
#else
    return 0;
#endif
}
