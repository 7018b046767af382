#include "direct_conv.h"

#include <stddef.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define DIRECT_SIMD 1   /* the AVX-512 or the AVX2 micro-kernel below; none in the generic variant */
#endif

#include "activation.h"
#include "im2col.h"
#include "threads.h"

/* Forward convolution without im2col, for groups of 32k output channels and no dilation.
 *
 * The micro-kernel computes T (13 or 14) output pixels of one row for 32 output channels: 28
 * vector accumulators, acc[t] holding 16 channels of pixel t. For each input channel and tap
 * (i, j) it loads 2 vectors of weights (32 output channels) and broadcasts T input values: 2 T
 * multiply-adds for T + 2 loads, so the FMA units, not the loads, set the pace. A row of Wo
 * pixels takes ceil(Wo / T) tiles, T being whichever of 13 and 14 wastes fewer pixels; the pixels
 * past Wo read zero padding and are dropped. The accumulators are then transposed into y, NCHW,
 * and the epilogue (bias, residual, activation: activation.h) runs on each finished output row.
 *
 * The AVX2 variant (8-wide, 16 registers) computes T <= 6 pixels for 16 output channels: 12
 * accumulators (2 vectors of 8 channels per pixel), 2 weight vectors and the broadcast; 12
 * multiply-adds for 8 loads. A row is cut into ceil(Wo / 6) tiles of as equal widths as
 * possible (27 = 6 + 6 + 5 + 5 + 5, 13 = 5 + 4 + 4), so no pixel is computed for nothing.
 *
 * Two layouts of the packed input and weights (per call; all groups of one image):
 *   BLOCKED (stride 1, 16k input channels per group; CaffeNet's conv2-5):
 *     xp [C/16][Hp][Wp][16]                 16 channels innermost, so the 16 channels of one
 *                                           pixel that a step broadcasts share a cache line
 *     wp [G][Kg/16][Cg/16][kh][kw][16 c][16 k]
 *   PLAIN (any stride and channel count; CaffeNet's conv1, 3 channels, stride 4):
 *     xp [C][Hp][Wp]                        the input with its padding written as zeros
 *     wp [G][Kg/16][Cg][kh][kw][16 k]
 * Hp and Wp are the rows and columns every tile's windows reach (in_rows, in_cols). */

enum { TILE = 14, CB = 16, KB = 16, MIN_MACS = 64 };
/* Output channels of one micro-kernel call: 2 vectors (AVX-512: blocks kb and kb + 1; AVX2: one
 * block). A group's output channels must be a multiple of it. */
#ifdef __AVX512F__
enum { KERNEL_K = 2 * KB };
#else
enum { KERNEL_K = KB, TILE8 = 6 };
#endif

#ifdef __AVX512F__
static int ceil_to(int v, int m) { return (v + m - 1) / m * m; }

/* 13 when it covers a row with fewer wasted pixels than 14 (a 13-wide row: none instead of 1). */
static int tile_width(const decaf_conv_geom *g)
{
    return ceil_to(g->Wo, 13) < ceil_to(g->Wo, TILE) ? 13 : TILE;
}
#endif

/* BLOCKED: stride 1 and 16k input channels per group (CaffeNet's conv2-5); PLAIN: any stride and
 * channel count (CaffeNet's conv1: 3 channels, stride 4). Both need a multiple of KERNEL_K output
 * channels per group (32 with AVX-512, 16 with AVX2), no dilation, and a kernel larger than 1x1. */
enum { NONE = 0, BLOCKED = 1, PLAIN = 2 };

static int layout(const decaf_conv_geom *g)
{
#ifdef DIRECT_SIMD
    const int Cg = g->C / g->G, Kg = g->K / g->G;
    /* The epilogue transposes the accumulators one value at a time, so a layer with few
     * multiply-adds per output is faster as im2col + GEMM (conv.c): EfficientNet-Lite0's 1x1
     * expansions (16-112 per output) ran 4x slower here, its stem (27) 2x. A 1x1 convolution needs
     * no im2col anyway. */
    if (g->dh != 1 || g->dw != 1 || Kg % KERNEL_K || g->Ho < 1 || g->Wo < 1 || g->kh * g->kw == 1
        || Cg * g->kh * g->kw < MIN_MACS)
        return NONE;
#ifdef __AVX512F__
    return g->sh == 1 && g->sw == 1 && Cg % CB == 0 ? BLOCKED : PLAIN;
#else   /* the AVX2 tiles read a pixel's window wherever it starts: any stride */
    return Cg % CB == 0 ? BLOCKED : PLAIN;
#endif
#else
    (void)g;
    return NONE;
#endif
}

int decaf_direct_conv_supported(const decaf_conv_geom *g)
{
    return layout(g) != NONE;
}

/* Rows and columns of the packed (zero-padded) input: what every tile's windows reach. */
static int in_rows(const decaf_conv_geom *g) { return (g->Ho - 1) * g->sh + g->kh; }
#ifdef __AVX512F__
static int in_cols(const decaf_conv_geom *g) { return (ceil_to(g->Wo, tile_width(g)) - 1) * g->sw + g->kw; }
#else   /* AVX2: the tiles end at Wo */
static int in_cols(const decaf_conv_geom *g) { return (g->Wo - 1) * g->sw + g->kw; }
#endif

static ptrdiff_t packed_weights(const decaf_conv_geom *g)
{
    return (ptrdiff_t)g->K * (g->C / g->G) * g->kh * g->kw;
}

static ptrdiff_t packed_input(const decaf_conv_geom *g)
{
    return (ptrdiff_t)g->C * in_rows(g) * in_cols(g);      /* all groups of one image */
}

void decaf_direct_conv_scratch(const decaf_conv_geom *g, decaf_conv_plan *p)
{
    p->slot = packed_input(g);
    p->slots = p->by_image ? p->threads : 1;
    p->work = packed_weights(g) + p->slots * p->slot + 16;   /* + 16: room to align the weights */
}

#ifdef DIRECT_SIMD
/* wp[gi][kb][cb][i][j][c][k] = w[gi Kg + kb 16 + k][cb 16 + c][i][j], for kb in [kb0, kb1) of all groups. */
static void pack_weights(const decaf_conv_geom *g, const float *w, float *wp, int task0, int task1)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw;
    const int kbs = Kg / KB, cbs = Cg / CB;
    for (int task = task0; task < task1; ++task) {        /* task = gi * kbs + kb */
        const int gi = task / kbs, kb = task % kbs;
        float *dst = wp + (ptrdiff_t)task * cbs * taps * CB * KB;
        for (int cb = 0; cb < cbs; ++cb)
            for (int tap = 0; tap < taps; ++tap)
                for (int c = 0; c < CB; ++c)
                    for (int k = 0; k < KB; ++k)
                        *dst++ = w[(((ptrdiff_t)gi * Kg + kb * KB + k) * Cg + cb * CB + c) * taps + tap];
    }
}

/* xp[cb][h][w][c] for channel blocks [cb0, cb1) of the whole image (all groups): the input at
 * (h - pad_top, w - pad_left), 0 outside. */
static void pack_input(const decaf_conv_geom *g, const float *x, float *xp, int cb0, int cb1)
{
    const int Hp = in_rows(g), Wp = in_cols(g);
    for (int cb = cb0; cb < cb1; ++cb) {
        float *dst = xp + (ptrdiff_t)cb * Hp * Wp * CB;
        for (int h = 0; h < Hp; ++h) {
            const int hi = h - g->pad_top;
            for (int w = 0; w < Wp; ++w) {
                const int wi = w - g->pad_left;
                float *d = dst + ((ptrdiff_t)h * Wp + w) * CB;
                if (hi < 0 || hi >= g->H || wi < 0 || wi >= g->W) {
                    for (int c = 0; c < CB; ++c) d[c] = 0.0f;
                } else {
                    const float *s = x + ((ptrdiff_t)cb * CB * g->H + hi) * g->W + wi;
                    for (int c = 0; c < CB; ++c) d[c] = s[(ptrdiff_t)c * g->H * g->W];
                }
            }
        }
    }
}

/* PLAIN layout. wp[gi][kb][c][i][j][k] = w[gi Kg + kb 16 + k][c][i][j] for the (gi, kb) blocks
 * task0 .. task1, and xp[c][h][w] = the input at (h - pad_top, w - pad_left), 0 outside, for
 * channels c0 .. c1 (all groups). */
static void pack_weights_plain(const decaf_conv_geom *g, const float *w, float *wp, int task0, int task1)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw, kbs = Kg / KB;
    for (int task = task0; task < task1; ++task) {
        const int gi = task / kbs, kb = task % kbs;
        float *dst = wp + (ptrdiff_t)task * Cg * taps * KB;
        for (int ct = 0; ct < Cg * taps; ++ct)               /* ct = c * taps + tap */
            for (int k = 0; k < KB; ++k)
                *dst++ = w[((ptrdiff_t)gi * Kg + kb * KB + k) * Cg * taps + ct];
    }
}

static void pack_input_plain(const decaf_conv_geom *g, const float *x, float *xp, int c0, int c1)
{
    const int Hp = in_rows(g), Wp = in_cols(g);
    for (int c = c0; c < c1; ++c)
        decaf_pad_plane(x + (ptrdiff_t)c * g->H * g->W, g->H, g->W, g->pad_top, g->pad_left,
                        xp + (ptrdiff_t)c * Hp * Wp, Hp, Wp);
}

/* The epilogue of output row oh of channels ch0 .. ch0 + nch of the image at offset `at` of y (the
 * whole output tensor), once its tiles are stored: bias, residual, activation. */
static void row_epilogue(const decaf_conv_geom *g, const decaf_epilogue *ep, const float *bias, float *y,
                         ptrdiff_t at, int ch0, int nch, int oh)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo;
    for (int ch = ch0; ch < ch0 + nch; ++ch)
        decaf_epilogue_at(ep, y, at + ch * hw + (ptrdiff_t)oh * g->Wo, g->Wo, bias ? bias[ch] : 0.0f);
}

#ifdef __AVX512F__
/* The store of a tile: acc0[t], acc1[t] hold channels ch0 .. ch0 + 32 of output pixel (oh, ow0 + t).
 * Transposed into y (NCHW, one image) one value at a time; pixels past Wo are dropped. The bias and
 * the rest of the epilogue follow once the row is done (see tiles). */
static void store_tile(const decaf_conv_geom *g, const __m512 *acc0, const __m512 *acc1, int T, float *y, int ch0,
                       int oh, int ow0)
{
    float out[TILE][2 * KB];
    for (int t = 0; t < T; ++t) {
        _mm512_storeu_ps(out[t], acc0[t]);
        _mm512_storeu_ps(out[t] + KB, acc1[t]);
    }
    const int n = g->Wo - ow0 < T ? g->Wo - ow0 : T;
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, at = (ptrdiff_t)oh * g->Wo + ow0;
    for (int k = 0; k < 2 * KB; ++k) {
        float *yo = y + (ch0 + k) * hw + at;
        for (int t = 0; t < n; ++t) yo[t] = out[t][k];
    }
}

/* 32 output channels (blocks kb, kb + 1 of group gi) of output row oh, pixels ow0 .. ow0 + TILE,
 * into y: the transpose of the accumulators. */
static inline __attribute__((always_inline)) void tile_of(
    const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb, int oh, int ow0, const int T)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw, cbs = Cg / CB;
    const int Hp = in_rows(g), Wp = in_cols(g);
    const ptrdiff_t wblock = (ptrdiff_t)cbs * taps * CB * KB;          /* one kb of packed weights */
    const float *w0 = wp + ((ptrdiff_t)gi * (Kg / KB) + kb) * wblock, *w1 = w0 + wblock;
    __m512 a0[TILE], a1[TILE];   /* the first T are used */
    for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
    for (int cb = 0; cb < cbs; ++cb) {
        const float *xb = xp + (ptrdiff_t)(gi * cbs + cb) * Hp * Wp * CB;
        for (int i = 0; i < g->kh; ++i) {
            for (int j = 0; j < g->kw; ++j) {
                const float *xs = xb + ((ptrdiff_t)(oh + i) * Wp + ow0 + j) * CB;   /* pixel t at xs + t CB */
                const ptrdiff_t woff = ((ptrdiff_t)cb * taps + i * g->kw + j) * CB * KB;
                for (int c = 0; c < CB; ++c) {
                    const __m512 v0 = _mm512_loadu_ps(w0 + woff + c * KB), v1 = _mm512_loadu_ps(w1 + woff + c * KB);
                    for (int t = 0; t < T; ++t) {
                        const __m512 xv = _mm512_set1_ps(xs[t * CB + c]);
                        a0[t] = _mm512_fmadd_ps(xv, v0, a0[t]);
                        a1[t] = _mm512_fmadd_ps(xv, v1, a1[t]);
                    }
                }
            }
        }
    }
    store_tile(g, a0, a1, T, y, gi * Kg + kb * KB, oh, ow0);
}

/* The micro-kernel for tiles of 13 and 14 pixels: 13 fits CaffeNet's 13x13 layers exactly. */
static void tile13(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                   int oh, int ow0)
{
    tile_of(g, xp, wp, y, gi, kb, oh, ow0, 13);
}

static void tile14(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                   int oh, int ow0)
{
    tile_of(g, xp, wp, y, gi, kb, oh, ow0, 14);
}

/* The PLAIN micro-kernel: as tile_of, with input pixel t of tap (i, j) at column (ow0 + t) sw + j
 * of row oh sh + i of channel c; one input channel per step. */
static inline __attribute__((always_inline)) void tile_plain_of(
    const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb, int oh, int ow0, const int T)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw;
    const int Hp = in_rows(g), Wp = in_cols(g), sw = g->sw;
    const ptrdiff_t wblock = (ptrdiff_t)Cg * taps * KB;
    const float *w0 = wp + ((ptrdiff_t)gi * (Kg / KB) + kb) * wblock, *w1 = w0 + wblock;
    __m512 a0[TILE], a1[TILE];   /* the first T are used */
    for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
    for (int c = 0; c < Cg; ++c) {
        for (int i = 0; i < g->kh; ++i) {
            const float *row = xp + ((ptrdiff_t)(gi * Cg + c) * Hp + oh * g->sh + i) * Wp + (ptrdiff_t)ow0 * sw;
            const float *wc = w0 + ((ptrdiff_t)c * taps + i * g->kw) * KB;
            for (int j = 0; j < g->kw; ++j) {
                const __m512 v0 = _mm512_loadu_ps(wc + j * KB), v1 = _mm512_loadu_ps(wc + j * KB + wblock);
                for (int t = 0; t < T; ++t) {
                    const __m512 xv = _mm512_set1_ps(row[t * sw + j]);
                    a0[t] = _mm512_fmadd_ps(xv, v0, a0[t]);
                    a1[t] = _mm512_fmadd_ps(xv, v1, a1[t]);
                }
            }
        }
    }
    (void)w1;
    store_tile(g, a0, a1, T, y, gi * Kg + kb * KB, oh, ow0);
}

static void tile13_plain(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                         int oh, int ow0)
{
    tile_plain_of(g, xp, wp, y, gi, kb, oh, ow0, 13);
}

static void tile14_plain(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                         int oh, int ow0)
{
    tile_plain_of(g, xp, wp, y, gi, kb, oh, ow0, 14);
}

/* All tiles of tasks [task0, task1): task = (gi * Kg / 32 + pair) * Ho + oh, for the image at
 * offset `at` of y; each row's epilogue once its tiles are stored. */
static void tiles(const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y,
                  ptrdiff_t at, const decaf_epilogue *ep, ptrdiff_t task0, ptrdiff_t task1)
{
    const int pairs = g->K / g->G / (2 * KB);
    for (ptrdiff_t task = task0; task < task1; ++task) {
        const int oh = (int)(task % g->Ho), gp = (int)(task / g->Ho);
        const int gi = gp / pairs, kb = 2 * (gp % pairs);
        const int T = tile_width(g);
        void (*kernel)(const decaf_conv_geom *, const float *, const float *, float *, int, int, int, int)
            = layout(g) == PLAIN ? (T == 13 ? tile13_plain : tile14_plain) : (T == 13 ? tile13 : tile14);
        for (int ow0 = 0; ow0 < g->Wo; ow0 += T)
            kernel(g, xp, wp, y + at, gi, kb, oh, ow0);
        row_epilogue(g, ep, bias, y, at, gi * (g->K / g->G) + kb * KB, 2 * KB, oh);
    }
}

static ptrdiff_t task_count(const decaf_conv_geom *g)   /* task = (gi Kg / 32 + kb / 2) Ho + oh */
{
    return (ptrdiff_t)g->G * (g->K / g->G / KERNEL_K) * g->Ho;
}
#else   /* AVX2 + FMA: 8-wide, 16 registers */

/* The store of a tile of T pixels: out[t] holds channels ch0 .. ch0 + 16 of output pixel
 * (oh, ow0 + t); as the AVX-512 store_tile (the epilogue follows per row). The kernels
 * store their accumulators into out themselves: passing the vectors' address here made GCC keep
 * them in memory, a store per multiply-add (3x slower). */
static void store_tile8(const decaf_conv_geom *g, float (*out)[KB], int T, float *y, int ch0, int oh, int ow0)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, at = (ptrdiff_t)oh * g->Wo + ow0;
    for (int k = 0; k < KB; ++k) {
        float *yo = y + (ch0 + k) * hw + at;
        for (int t = 0; t < T; ++t) yo[t] = out[t][k];
    }
}

/* What is applied to a tile's accumulators before the store when the layer's epilogue is at most a
 * clamp (ReLU, ReLU6): the bias (NULL: none) and the clamp, in the registers, so that no pass over
 * the stored rows follows (a call per channel and run of 24 pixels, about a tenth of a layer with
 * 16 input channels). NULL: the raw sums, the epilogue after (tiles). */
typedef struct {
    const float *bias;
    float lo, hi;
    int clamp;
} tile_fin;

/* The sums plus the bias of channels ch0 .. ch0 + 16, then min(hi, max(lo, .)) if asked: the same
 * operations in the same order as the epilogue's (y + bias, then decaf_clamp), so the same values
 * (a sum that underflowed to -0 aside); a NaN is kept (max and min return their second operand on a
 * NaN). */
static inline __attribute__((always_inline)) void finish8(__m256 *a0, __m256 *a1, const int T, const tile_fin *f,
                                                          int ch0)
{
    if (f->bias) {   /* (the epilogue skips a bias of 0; adding it differs only on a -0 sum, made +0) */
        const __m256 b0 = _mm256_loadu_ps(f->bias + ch0), b1 = _mm256_loadu_ps(f->bias + ch0 + 8);
        _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
            a0[t] = _mm256_add_ps(a0[t], b0);
            a1[t] = _mm256_add_ps(a1[t], b1);
        }
    }
    if (f->clamp) {
        const __m256 lo = _mm256_set1_ps(f->lo), hi = _mm256_set1_ps(f->hi);
        _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
            a0[t] = _mm256_min_ps(hi, _mm256_max_ps(lo, a0[t]));
            a1[t] = _mm256_min_ps(hi, _mm256_max_ps(lo, a1[t]));
        }
    }
}

/* BLOCKED: 16 output channels (block kb of group gi) of output pixels p0 .. p0 + T of the image,
 * counted row after row (p = oh Wo + ow): a tile may go on into the next row, so that small
 * outputs (7x7: 49 = 4 x 6 + 5 x 5) are not cut into narrow tiles per row (7 = 4 + 3). Pixel t's
 * window starts at base[t] of each packed channel block; tap (i, j) adds (i Wp + j) 16. For each
 * input channel and tap: the 2 weight vectors of the block, times T broadcast inputs. */
static inline __attribute__((always_inline)) void tile8_of(
    const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb, int p0, const int T,
    const tile_fin *fin)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw, cbs = Cg / CB;
    const int Hp = in_rows(g), Wp = in_cols(g);
    const float *w0 = wp + ((ptrdiff_t)gi * (Kg / KB) + kb) * cbs * taps * CB * KB;
    ptrdiff_t base[TILE8];
    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
        const int oh = (p0 + t) / g->Wo, ow = (p0 + t) % g->Wo;
        base[t] = ((ptrdiff_t)oh * g->sh * Wp + (ptrdiff_t)ow * g->sw) * CB;
    }
    __m256 a0[TILE8], a1[TILE8];   /* the first T are used */
    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
    for (int cb = 0; cb < cbs; ++cb) {
        const float *xb = xp + (ptrdiff_t)(gi * cbs + cb) * Hp * Wp * CB;
        for (int i = 0; i < g->kh; ++i) {
            for (int j = 0; j < g->kw; ++j) {
                const float *xs = xb + ((ptrdiff_t)i * Wp + j) * CB;   /* pixel t at xs + base[t] */
                const float *ws = w0 + ((ptrdiff_t)cb * taps + i * g->kw + j) * CB * KB;
                for (int c = 0; c < CB; ++c) {
                    const __m256 v0 = _mm256_loadu_ps(ws + c * KB), v1 = _mm256_loadu_ps(ws + c * KB + 8);
                    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
                        const __m256 xv = _mm256_broadcast_ss(xs + base[t] + c);
                        a0[t] = _mm256_fmadd_ps(xv, v0, a0[t]);
                        a1[t] = _mm256_fmadd_ps(xv, v1, a1[t]);
                    }
                }
            }
        }
    }
    if (fin)
        finish8(a0, a1, T, fin, gi * Kg + kb * KB);
    float out[TILE8][KB];
    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
        _mm256_storeu_ps(out[t], a0[t]);
        _mm256_storeu_ps(out[t] + 8, a1[t]);
    }
    store_tile8(g, out, T, y, gi * Kg + kb * KB, 0, p0);   /* (pixel p0 of row 0 is pixel p0) */
}

/* PLAIN: as tile8_of, input pixel t of tap (i, j) at column (ow0 + t) sw + j of row oh sh + i. */
static inline __attribute__((always_inline)) void tile8_plain_of(
    const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb, int oh, int ow0, const int T,
    const tile_fin *fin)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw;
    const int Hp = in_rows(g), Wp = in_cols(g), sw = g->sw;
    const float *w0 = wp + ((ptrdiff_t)gi * (Kg / KB) + kb) * Cg * taps * KB;
    __m256 a0[TILE8], a1[TILE8];
    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
    for (int c = 0; c < Cg; ++c) {
        for (int i = 0; i < g->kh; ++i) {
            const float *row = xp + ((ptrdiff_t)(gi * Cg + c) * Hp + oh * g->sh + i) * Wp + (ptrdiff_t)ow0 * sw;
            const float *wc = w0 + ((ptrdiff_t)c * taps + i * g->kw) * KB;
            for (int j = 0; j < g->kw; ++j) {
                const __m256 v0 = _mm256_loadu_ps(wc + j * KB), v1 = _mm256_loadu_ps(wc + j * KB + 8);
                _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
                    const __m256 xv = _mm256_broadcast_ss(row + t * sw + j);
                    a0[t] = _mm256_fmadd_ps(xv, v0, a0[t]);
                    a1[t] = _mm256_fmadd_ps(xv, v1, a1[t]);
                }
            }
        }
    }
    if (fin)
        finish8(a0, a1, T, fin, gi * Kg + kb * KB);
    float out[TILE8][KB];
    _Pragma("GCC unroll 6") for (int t = 0; t < T; ++t) {
        _mm256_storeu_ps(out[t], a0[t]);
        _mm256_storeu_ps(out[t] + 8, a1[t]);
    }
    store_tile8(g, out, T, y, gi * Kg + kb * KB, oh, ow0);
}

/* One tile of T (1 .. 6) pixels: a compiled kernel per width, so the accumulators stay in
 * registers. */
static void tile8_plain(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                        int oh, int ow0, int T, const tile_fin *fin)
{
#define TILE8_CASE(n) case n: tile8_plain_of(g, xp, wp, y, gi, kb, oh, ow0, n, fin); break;
    switch (T) {
    TILE8_CASE(1) TILE8_CASE(2) TILE8_CASE(3) TILE8_CASE(4) TILE8_CASE(5) TILE8_CASE(6)
    default: break;
    }
#undef TILE8_CASE
}

static void tile8_blocked(const decaf_conv_geom *g, const float *xp, const float *wp, float *y, int gi, int kb,
                          int p0, int T, const tile_fin *fin)
{
#define TILE8_CASE(n) case n: tile8_of(g, xp, wp, y, gi, kb, p0, n, fin); break;
    switch (T) {
    TILE8_CASE(1) TILE8_CASE(2) TILE8_CASE(3) TILE8_CASE(4) TILE8_CASE(5) TILE8_CASE(6)
    default: break;
    }
#undef TILE8_CASE
}

/* BLOCKED tasks: a chunk of up to CHUNK8 tiles of one 16-channel block. The Ho Wo pixels are
 * ceil(Ho Wo / 6) tiles, the first (Ho Wo) % tiles of them one pixel wider; chunk c covers tiles
 * c CHUNK8 .. (c + 1) CHUNK8. The tasks of one block are consecutive, so a thread's run of tasks
 * reads the block's weights from its cache. */
enum { CHUNK8 = 4 };

static void tile_split(const decaf_conv_geom *g, int *n, int *base, int *wider, int *chunks)
{
    const int P = g->Ho * g->Wo;
    *n = (P + TILE8 - 1) / TILE8;
    *base = P / *n;
    *wider = P % *n;
    *chunks = (*n + CHUNK8 - 1) / CHUNK8;
}

static ptrdiff_t task_count(const decaf_conv_geom *g)
{
    int n, base, wider, chunks;
    if (layout(g) == PLAIN)
        return (ptrdiff_t)g->G * (g->K / g->G / KERNEL_K) * g->Ho;
    tile_split(g, &n, &base, &wider, &chunks);
    return (ptrdiff_t)g->G * (g->K / g->G / KB) * chunks;
}

/* All tiles of tasks [task0, task1) of one image (at: its offset in y). PLAIN: task = (gi Kg / 16 +
 * kb) Ho + oh, a row of Wo pixels in ceil(Wo / 6) tiles, the first Wo % tiles of them one pixel
 * wider. BLOCKED: task = (gi Kg / 16 + kb) chunks + chunk (see tile_split). The bias and a clamp
 * are applied in the registers (tile_fin); any other epilogue runs on each task's pixels once they
 * are stored. */
static void tiles(const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y,
                  ptrdiff_t at, const decaf_epilogue *ep, ptrdiff_t task0, ptrdiff_t task1)
{
    const int kbs = g->K / g->G / KB;
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo;
    const int clamp = decaf_epilogue_is_clamp(ep);
    const int in_registers = !ep || (ep->act == DECAF_ACT_NONE && !ep->residual) || clamp;
    const tile_fin f = {bias, clamp ? ep->lo : 0.0f, clamp ? ep->hi : 0.0f, clamp};
    const tile_fin *fin = in_registers ? &f : NULL;
    if (layout(g) == PLAIN) {
        const int n = (g->Wo + TILE8 - 1) / TILE8, base = g->Wo / n, wider = g->Wo % n;
        for (ptrdiff_t task = task0; task < task1; ++task) {
            const int oh = (int)(task % g->Ho), gk = (int)(task / g->Ho);
            const int gi = gk / kbs, kb = gk % kbs;
            for (int i = 0, ow0 = 0; i < n; ++i) {
                const int T = base + (i < wider);
                tile8_plain(g, xp, wp, y + at, gi, kb, oh, ow0, T, fin);
                ow0 += T;
            }
            if (!in_registers)
                row_epilogue(g, ep, bias, y, at, gi * (g->K / g->G) + kb * KB, KB, oh);
        }
        return;
    }
    int n, base, wider, chunks;
    tile_split(g, &n, &base, &wider, &chunks);
    for (ptrdiff_t task = task0; task < task1; ++task) {
        const int chunk = (int)(task % chunks), gk = (int)(task / chunks);
        const int gi = gk / kbs, kb = gk % kbs, ch0 = gi * (g->K / g->G) + kb * KB;
        const int i0 = chunk * CHUNK8, i1 = i0 + CHUNK8 < n ? i0 + CHUNK8 : n;
        const int p0 = i0 * base + (i0 < wider ? i0 : wider);   /* the first pixel of tile i0 */
        int p = p0;
        for (int i = i0; i < i1; ++i) {
            const int T = base + (i < wider);
            tile8_blocked(g, xp, wp, y + at, gi, kb, p, T, fin);
            p += T;
        }
        if (!in_registers)
            for (int ch = ch0; ch < ch0 + KB; ++ch)
                decaf_epilogue_at(ep, y, at + ch * hw + p0, p - p0, bias ? bias[ch] : 0.0f);
    }
}
#endif   /* __AVX512F__ */
#endif   /* DIRECT_SIMD */

ptrdiff_t decaf_direct_conv_packed_size(const decaf_conv_geom *g)
{
    return packed_weights(g);
}

void decaf_direct_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *wp)
{
#ifdef DIRECT_SIMD
    const int wtasks = g->G * (g->K / g->G / KB), plain = layout(g) == PLAIN;
    #pragma omp parallel num_threads(p->threads)
    {
        const int t = decaf_thread_num(), T = decaf_team_size();
        (plain ? pack_weights_plain : pack_weights)(g, w, wp, wtasks * t / T, wtasks * (t + 1) / T);
    }
#else
    (void)g, (void)p, (void)w, (void)wp;
#endif
}

void decaf_direct_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                               const float *packed, const float *bias, float *y, float *work,
                               const decaf_epilogue *ep)
{
#ifdef DIRECT_SIMD
    const int nt = p->threads;
    const int Kg = g->K / g->G, plain = layout(g) == PLAIN;
    const int units = plain ? g->C : g->C / CB;     /* what pack_input splits: channels or blocks */
    const int wtasks = g->G * (Kg / KB);
    const ptrdiff_t plane_in = (ptrdiff_t)g->C * g->H * g->W, plane_out = (ptrdiff_t)g->K * g->Ho * g->Wo;
    const ptrdiff_t tasks = task_count(g);
    /* 64-byte aligned start for the packed weights (unless prepacked: then the scratch keeps room
     * for them unused, so that one plan serves both calls) */
    float *wbuf = work + ((64 - ((size_t)work & 63)) & 63) / sizeof(float);
    float *xbuf = wbuf + packed_weights(g);
    const float *wp = packed ? packed : wbuf;
    const int per_image = p->by_image;
    #pragma omp parallel num_threads(nt)
    {
        const int t = decaf_thread_num(), T = decaf_team_size();
        if (!packed)
            (plain ? pack_weights_plain : pack_weights)(g, w, wbuf, wtasks * t / T, wtasks * (t + 1) / T);
        if (per_image) {
            #pragma omp barrier
            float *xp = xbuf + t * p->slot;
            for (int b = g->B * t / T; b < g->B * (t + 1) / T; ++b) {
                (plain ? pack_input_plain : pack_input)(g, x + b * plane_in, xp, 0, units);
                tiles(g, xp, wp, bias, y, b * plane_out, ep, 0, tasks);
            }
        } else {
            for (int b = 0; b < g->B; ++b) {
                (plain ? pack_input_plain : pack_input)(g, x + b * plane_in, xbuf, units * t / T, units * (t + 1) / T);
                #pragma omp barrier
                tiles(g, xbuf, wp, bias, y, b * plane_out, ep, tasks * t / T, tasks * (t + 1) / T);
                #pragma omp barrier
            }
        }
    }
#else
    (void)g, (void)p, (void)x, (void)w, (void)packed, (void)bias, (void)y, (void)work, (void)ep;
#endif
}
