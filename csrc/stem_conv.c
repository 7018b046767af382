#include "stem_conv.h"

#include <stddef.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "activation.h"
#include "threads.h"

/* Direct convolution for layers with few multiply-adds per output: a network's first layer (3
 * input channels, 3x3 at stride 2 in MobileNet and EfficientNet: 27 per output). There the direct
 * kernel (direct_conv.c), whose lanes hold output channels, spends more on transposing its sums
 * into y than on the sums, and im2col + GEMM runs a GEMM with an inner dimension of 27.
 *
 * Here the lanes hold output pixels: a tile is 4 output channels x 16 consecutive pixels of one
 * output row (8 vector accumulators on AVX2), stored straight into y's rows, which are NCHW. For
 * a tap (c, i, j), pixel ox + l reads padded row oy s + i, padded column (ox + l) s + j. The input
 * is first copied, image by image, split by column phase: column q s + f of a padded row goes to
 * place q of phase f, so that the 16 pixels' values of a tap are 16 consecutive places of phase
 * j % s, from place ox + j / s on (two plain loads):
 *     xs[c][f][r][q] = x[c][r - pad_top][q s + f - pad_left]   (0 outside the image)
 * with r < Hp = (Ho - 1) s + kh rows and q < Wq = ceil(Wo / 16) 16 + (kw - 1) / s places (the last
 * tile's pixels past Wo read zeros and are not stored). The weights are reordered per call into
 * wp[k / 4][c][i][j][4], a tap's 4 weights consecutive (channels past K are zeros). The epilogue
 * (bias, residual, activation: activation.h) runs on each finished output row of a channel. */

enum { KB = 4, PX = 16 };

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

int decaf_stem_conv_supported(const decaf_conv_geom *g)
{
    return g->G == 1 && g->C <= 4 && g->sh == g->sw && g->sh <= 2 && g->dh == 1 && g->dw == 1 && g->kh <= 7
           && g->kw <= 7 && g->kh * g->kw > 1 && g->C * g->kh * g->kw < 64 && g->Ho >= 1 && g->Wo >= 1
           && g->K >= 1;   /* (a 1x1 convolution needs no im2col: its GEMM reads x itself) */
}

static int rows_padded(const decaf_conv_geom *g) { return (g->Ho - 1) * g->sh + g->kh; }
static int places(const decaf_conv_geom *g) { return ceil_div(g->Wo, PX) * PX + (g->kw - 1) / g->sw; }

static ptrdiff_t split_floats(const decaf_conv_geom *g)
{
    return (ptrdiff_t)g->C * g->sw * rows_padded(g) * places(g);
}

static ptrdiff_t weight_floats(const decaf_conv_geom *g)
{
    return (ptrdiff_t)ceil_div(g->K, KB) * KB * g->C * g->kh * g->kw;
}

ptrdiff_t decaf_stem_conv_work_size(const decaf_conv_geom *g)
{
    return weight_floats(g) + split_floats(g);
}

/* The 16 pixels of output row `row0 / s` from place q0, for the 4 channels of wp4 ([C][kh][kw][4]),
 * into out (4 rows of 16). xs: one image's split input; cs: floats between its channels; tap[j]:
 * where column tap j starts from a row's place 0 ((j % s) phases + j / s places, computed once:
 * a division per tap cost more than its 8 multiply-adds). */
static void tile(const float *xs, ptrdiff_t cs, int Wq, const ptrdiff_t *tap, const float *wp4,
                 const decaf_conv_geom *g, int row0, int q0, float out[KB][PX])
{
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    for (int c = 0; c < g->C; ++c)
        for (int i = 0; i < g->kh; ++i) {
            const float *base = xs + c * cs + (ptrdiff_t)(row0 + i) * Wq + q0;
            const float *w = wp4 + ((ptrdiff_t)c * g->kh + i) * g->kw * KB;
            for (int j = 0; j < g->kw; ++j, w += KB) {
                const float *src = base + tap[j];
                const __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
                const __m256 w0 = _mm256_broadcast_ss(w), w1 = _mm256_broadcast_ss(w + 1);
                const __m256 w2 = _mm256_broadcast_ss(w + 2), w3 = _mm256_broadcast_ss(w + 3);
                a0 = _mm256_fmadd_ps(w0, v0, a0), a1 = _mm256_fmadd_ps(w0, v1, a1);
                b0 = _mm256_fmadd_ps(w1, v0, b0), b1 = _mm256_fmadd_ps(w1, v1, b1);
                c0 = _mm256_fmadd_ps(w2, v0, c0), c1 = _mm256_fmadd_ps(w2, v1, c1);
                d0 = _mm256_fmadd_ps(w3, v0, d0), d1 = _mm256_fmadd_ps(w3, v1, d1);
            }
        }
    _mm256_storeu_ps(out[0], a0), _mm256_storeu_ps(out[0] + 8, a1);
    _mm256_storeu_ps(out[1], b0), _mm256_storeu_ps(out[1] + 8, b1);
    _mm256_storeu_ps(out[2], c0), _mm256_storeu_ps(out[2] + 8, c1);
    _mm256_storeu_ps(out[3], d0), _mm256_storeu_ps(out[3] + 8, d1);
#else
    for (int k = 0; k < KB; ++k)
        for (int l = 0; l < PX; ++l) out[k][l] = 0.0f;
    for (int c = 0; c < g->C; ++c)
        for (int i = 0; i < g->kh; ++i) {
            const float *base = xs + c * cs + (ptrdiff_t)(row0 + i) * Wq + q0;
            const float *w = wp4 + ((ptrdiff_t)c * g->kh + i) * g->kw * KB;
            for (int j = 0; j < g->kw; ++j, w += KB) {
                const float *src = base + tap[j];
                for (int k = 0; k < KB; ++k)
                    for (int l = 0; l < PX; ++l) out[k][l] += w[k] * src[l];
            }
        }
#endif
}

/* dst[q] = src[2 q] for q0 <= q < q1 (src[i] readable for i < avail): the even columns of a row
 * from src on. AVX2: 16 floats loaded, the 8 even ones kept, while the 16 lie inside the row. */
static void phase_copy(float *dst, const float *src, int q0, int q1, int avail)
{
    int q = q0;
#ifdef __AVX2__
    for (; q + 8 <= q1 && 2 * q + 16 <= avail; q += 8) {
        const __m256 a = _mm256_loadu_ps(src + 2 * q), b = _mm256_loadu_ps(src + 2 * q + 8);
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));   /* a0 a2 b0 b2 | a4 a6 b4 b6 */
        _mm256_storeu_ps(dst + q, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e),
                                                                          _MM_SHUFFLE(3, 1, 2, 0))));
    }
#endif
    for (; q < q1; ++q) dst[q] = src[2 * q];
}

/* xs = image b's split input (see the top), rows r0 .. r1 of every (channel, phase). */
static void split_rows(const decaf_conv_geom *g, const float *x, float *xs, ptrdiff_t u0, ptrdiff_t u1)
{
    const int s = g->sw, Hp = rows_padded(g), Wq = places(g);
    for (ptrdiff_t u = u0; u < u1; ++u) {   /* u = (c s + f) Hp + r */
        const int r = (int)(u % Hp), f = (int)(u / Hp % s), c = (int)(u / Hp / s);
        float *dst = xs + u * Wq;
        const int ir = r - g->pad_top;
        if (ir < 0 || ir >= g->H) {
            memset(dst, 0, sizeof(float) * (size_t)Wq);
            continue;
        }
        /* places q0 .. q1 read the image (columns q s + f - pad_left in [0, W)), the others are 0 */
        const int shift = f - g->pad_left;
        int q0 = shift >= 0 ? 0 : (-shift + s - 1) / s, q1 = (g->W - 1 - shift) / s + 1;
        q1 = g->W - 1 - shift < 0 ? 0 : q1 > Wq ? Wq : q1;
        q0 = q0 > q1 ? q1 : q0;
        const float *row = x + ((ptrdiff_t)c * g->H + ir) * g->W;
        for (int q = 0; q < q0; ++q) dst[q] = 0.0f;
        if (s == 1)
            memcpy(dst + q0, row + q0 + shift, sizeof(float) * (size_t)(q1 - q0));
        else
            phase_copy(dst, row + shift, q0, q1, g->W - shift);
        for (int q = q1; q < Wq; ++q) dst[q] = 0.0f;
    }
}

void decaf_stem_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const int C = g->C, K = g->K, kk = g->kh * g->kw, s = g->sw, Hp = rows_padded(g), Wq = places(g);
    const int kblocks = ceil_div(K, KB), tiles = ceil_div(g->Wo, PX);
    const ptrdiff_t fs = (ptrdiff_t)Hp * Wq, cs = s * fs, plane = (ptrdiff_t)g->Ho * g->Wo;
    const ptrdiff_t split_rows_count = (ptrdiff_t)C * s * Hp, tasks = (ptrdiff_t)g->Ho * kblocks;
    float *wp = work, *xs = work + weight_floats(g);
    ptrdiff_t tap[7];
    for (int j = 0; j < g->kw; ++j) tap[j] = (j % s) * fs + j / s;
    const int nt = decaf_threads_for((ptrdiff_t)g->B * plane * K * C * kk);
    #pragma omp parallel num_threads(nt)
    {
        /* wp[kb][c][i][j][4]: the weights of channels 4 kb .. 4 kb + 3, zeros past K */
        #pragma omp for schedule(static)
        for (int kb = 0; kb < kblocks; ++kb)
            for (int t = 0; t < C * kk; ++t)
                for (int l = 0; l < KB; ++l) {
                    const int k = kb * KB + l;
                    wp[((ptrdiff_t)kb * C * kk + t) * KB + l] = k < K ? w[(ptrdiff_t)k * C * kk + t] : 0.0f;
                }
        for (int b = 0; b < g->B; ++b) {
            const int T = decaf_team_size(), me = decaf_thread_num();
            split_rows(g, x + (ptrdiff_t)b * C * g->H * g->W, xs, split_rows_count * me / T,
                       split_rows_count * (me + 1) / T);
            #pragma omp barrier
            #pragma omp for schedule(static)
            for (ptrdiff_t task = 0; task < tasks; ++task) {   /* (output row, block of 4 channels) */
                const int oy = (int)(task / kblocks), kb = (int)(task % kblocks), k0 = kb * KB;
                const int nk = K - k0 < KB ? K - k0 : KB;
                float out[KB][PX];
                float *yrow = y + ((ptrdiff_t)b * K + k0) * plane + (ptrdiff_t)oy * g->Wo;
                for (int t = 0; t < tiles; ++t) {
                    const int ox = t * PX, n = g->Wo - ox < PX ? g->Wo - ox : PX;
                    tile(xs, cs, Wq, tap, wp + (ptrdiff_t)kb * C * kk * KB, g, oy * s, ox, out);
                    for (int k = 0; k < nk; ++k)
                        memcpy(yrow + k * plane + ox, out[k], sizeof(float) * (size_t)n);
                }
                for (int k = 0; k < nk; ++k)
                    decaf_epilogue_at(ep, y, ((ptrdiff_t)b * K + k0 + k) * plane + (ptrdiff_t)oy * g->Wo, g->Wo,
                                      bias ? bias[k0 + k] : 0.0f);
            }   /* (the implicit barrier: xs is rewritten for the next image only after every task) */
        }
    }
}
