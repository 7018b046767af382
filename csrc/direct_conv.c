#include "direct_conv.h"

#include <stddef.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "threads.h"

/* Forward convolution without im2col, for stride 1, no dilation, and groups whose input channels
 * are a multiple of 16 and output channels a multiple of 32 (CaffeNet's conv2-5).
 *
 * Layouts (per image and group; Cg = C/G input and Kg = K/G output channels):
 *   xp  [Cg/16][Hp][Wp][16]         the input, 16 channels innermost, with the padding written
 *                                   as zeros (Hp = Ho + kh - 1; Wp = Wo rounded up to the tile width, + kw - 1)
 *   wp  [G][Kg/16][Cg/16][kh][kw][16 c][16 k]   the weights, packed once per call
 * The micro-kernel computes TILE output pixels of one row for 32 output channels: 28 vector
 * accumulators, acc[t] holding 16 channels of pixel t. For each of the 16 input channels of a
 * block and each tap (i, j) it loads 2 vectors of weights and broadcasts TILE input values:
 * 2 * TILE multiply-adds for TILE + 2 loads. A row of Wo pixels takes ceil(Wo / T) tiles of T = 13
 * or 14 pixels (whichever wastes fewer); the pixels past Wo read the zero padding and are dropped. */

enum { TILE = 14, CB = 16, KB = 16 };

static int ceil_to(int v, int m) { return (v + m - 1) / m * m; }

/* 13 when it covers a row with fewer wasted pixels than 14 (a 13-wide row: none instead of 1). */
static int tile_width(const decaf_conv_geom *g)
{
    return ceil_to(g->Wo, 13) < ceil_to(g->Wo, TILE) ? 13 : TILE;
}

/* Columns of the packed input: every tile's pixels plus the kernel's reach, zero past the image. */
static int padded_width(const decaf_conv_geom *g)
{
    return ceil_to(g->Wo, tile_width(g)) + g->kw - 1;
}

int decaf_direct_conv_supported(const decaf_conv_geom *g)
{
#ifdef __AVX512F__
    const int Cg = g->C / g->G, Kg = g->K / g->G;
    return g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && Cg % CB == 0 && Kg % (2 * KB) == 0
           && g->Ho >= 1 && g->Wo >= 1;
#else
    (void)g;
    return 0;
#endif
}

static ptrdiff_t packed_weights(const decaf_conv_geom *g)
{
    return (ptrdiff_t)g->K * (g->C / g->G) * g->kh * g->kw;
}

static ptrdiff_t packed_input(const decaf_conv_geom *g)
{
    const ptrdiff_t Hp = g->Ho + g->kh - 1, Wp = padded_width(g);
    return (ptrdiff_t)g->C * Hp * Wp;      /* all groups of one image */
}

ptrdiff_t decaf_direct_conv_work_size(const decaf_conv_geom *g, int threads)
{
    const int nt = threads < 1 ? 1 : threads;
    /* packed weights, then one packed image per thread (one shared image when B < threads) */
    return packed_weights(g) + (g->B >= nt ? nt : 1) * packed_input(g) + 16;
}

#ifdef __AVX512F__
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
    const int Hp = g->Ho + g->kh - 1, Wp = padded_width(g);
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

/* 32 output channels (blocks kb, kb + 1 of group gi) of output row oh, pixels ow0 .. ow0 + TILE,
 * into y (and r): the transpose of the accumulators, plus bias, then the ReLU. */
static inline __attribute__((always_inline)) void tile_of(
    const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y, float *r, int relu,
    int gi, int kb, int oh, int ow0, const int T)
{
    const int Cg = g->C / g->G, Kg = g->K / g->G, taps = g->kh * g->kw, cbs = Cg / CB;
    const int Hp = g->Ho + g->kh - 1, Wp = padded_width(g);
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
    float out[TILE][2 * KB];
    for (int t = 0; t < T; ++t) {
        _mm512_storeu_ps(out[t], a0[t]);
        _mm512_storeu_ps(out[t] + KB, a1[t]);
    }
    const int n = g->Wo - ow0 < T ? g->Wo - ow0 : T;
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo;
    for (int k = 0; k < 2 * KB; ++k) {
        const int ch = gi * Kg + kb * KB + k;
        const float b = bias ? bias[ch] : 0.0f;
        float *yo = y + ch * hw + (ptrdiff_t)oh * g->Wo + ow0, *ro = r ? r + ch * hw + (ptrdiff_t)oh * g->Wo + ow0 : yo;
        for (int t = 0; t < n; ++t) {
            const float v = out[t][k] + b;
            yo[t] = v;
            if (relu) ro[t] = v < 0.0f ? 0.0f : v;
        }
    }
}

/* The micro-kernel for tiles of 13 and 14 pixels: 13 fits CaffeNet's 13x13 layers exactly. */
static void tile13(const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y,
                   float *r, int relu, int gi, int kb, int oh, int ow0)
{
    tile_of(g, xp, wp, bias, y, r, relu, gi, kb, oh, ow0, 13);
}

static void tile14(const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y,
                   float *r, int relu, int gi, int kb, int oh, int ow0)
{
    tile_of(g, xp, wp, bias, y, r, relu, gi, kb, oh, ow0, 14);
}

/* All tiles of tasks [task0, task1): task = (gi * Kg / 32 + pair) * Ho + oh, for one image. */
static void tiles(const decaf_conv_geom *g, const float *xp, const float *wp, const float *bias, float *y,
                  float *r, int relu, ptrdiff_t task0, ptrdiff_t task1)
{
    const int pairs = g->K / g->G / (2 * KB);
    for (ptrdiff_t task = task0; task < task1; ++task) {
        const int oh = (int)(task % g->Ho), gp = (int)(task / g->Ho);
        const int gi = gp / pairs, kb = 2 * (gp % pairs);
        const int T = tile_width(g);
        for (int ow0 = 0; ow0 < g->Wo; ow0 += T)
            (T == 13 ? tile13 : tile14)(g, xp, wp, bias, y, r, relu, gi, kb, oh, ow0);
    }
}
#endif

void decaf_direct_conv_forward(const decaf_conv_geom *g, const float *x, const float *w, const float *bias,
                               float *y, float *work, int relu, float *relu_out)
{
#ifdef __AVX512F__
    const int nt = decaf_get_num_threads();
    const int Kg = g->K / g->G, cbs_all = g->C / CB;
    const int wtasks = g->G * (Kg / KB);
    const ptrdiff_t plane_in = (ptrdiff_t)g->C * g->H * g->W, plane_out = (ptrdiff_t)g->K * g->Ho * g->Wo;
    const ptrdiff_t tasks = (ptrdiff_t)g->G * (Kg / (2 * KB)) * g->Ho;
    /* 64-byte aligned start for the packed weights */
    float *wp = work + ((64 - ((size_t)work & 63)) & 63) / sizeof(float);
    float *xbuf = wp + packed_weights(g);
    const int r_inplace = relu && !relu_out, per_image = g->B >= nt;   /* as the work size assumed */
    #pragma omp parallel num_threads(nt)
    {
        const int t = decaf_thread_num(), T = decaf_team_size();
        pack_weights(g, w, wp, wtasks * t / T, wtasks * (t + 1) / T);
        if (per_image) {
            #pragma omp barrier
            float *xp = xbuf + t * packed_input(g);
            for (int b = g->B * t / T; b < g->B * (t + 1) / T; ++b) {
                pack_input(g, x + b * plane_in, xp, 0, cbs_all);
                tiles(g, xp, wp, bias, y + b * plane_out, relu_out ? relu_out + b * plane_out : (r_inplace ? y + b * plane_out : NULL),
                      relu, 0, tasks);
            }
        } else {
            for (int b = 0; b < g->B; ++b) {
                pack_input(g, x + b * plane_in, xbuf, cbs_all * t / T, cbs_all * (t + 1) / T);
                #pragma omp barrier
                tiles(g, xbuf, wp, bias, y + b * plane_out,
                      relu_out ? relu_out + b * plane_out : (r_inplace ? y + b * plane_out : NULL),
                      relu, tasks * t / T, tasks * (t + 1) / T);
                #pragma omp barrier
            }
        }
    }
#else
    (void)g, (void)x, (void)w, (void)bias, (void)y, (void)work, (void)relu, (void)relu_out;
#endif
}
