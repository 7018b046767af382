#include "grouped_conv.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GC_SIMD 1
#endif

#include "activation.h"
#include "im2col.h"   /* decaf_valid_outputs */
#include "threads.h"

/* How it works (AVX2 + FMA). The AVX-512 variant (built with -mavx2 -mfma too) compiles this same
 * 8-lane code: no 16-lane transcription yet, as no machine here runs AVX-512 to test one.
 *
 * One task is (image b, group g, band of output rows). It first copies the Cg input planes of its
 * group, the rows its band reads, into the thread's buffer, zero-padded (as depthwise.c does), so
 * that every load of the inner loop is a plain unaligned load with no bounds test. With a column
 * stride sw > 1 each padded row is stored split into sw phases, phase q holding padded columns
 * q, q + sw, q + 2 sw, ..: the outputs ow .. ow + 7 of tap j read padded columns (ow + l) sw + j,
 * which are phase j % sw, columns ow + l + j / sw: 8 consecutive floats again (no shuffles in the
 * inner loop; the split is paid once per input element, not once per load).
 *
 * Buffer layout of one task, rows of Wq floats:
 *     buf[c][q][r][m] = padded input (row oh_lo sh + r, column m sw + q) of channel c of the group
 *                       (c < Cg, q < phases = min(sw, kw), r < Hq, m < Wq)
 * so tap t = (c, i, j) of the output vector at (oh, ow0) reads 8 floats at
 *     buf + off[t] + (oh - oh_lo) sh Wq + ow0,   off[t] = c chan + (j % sw) pstride + i Wq + j / sw
 * where a phase plane takes pstride = Hq Wq + 8 floats (8 of slack after its rows) and a channel
 * chan = phases pstride; off[] is computed once per call, in the head of `work`. Strides 1 and 2
 * fill the rows with masked loads, stride 2 splitting 16 columns at a time with shuffles; larger
 * strides gather column by column.
 *
 * The outputs of a band are enumerated as "positions": vectors of 8 consecutive outputs of a row,
 * nv = ceil(Wo / 8) per row, row-major; the last vector of a row is partial when 8 does not divide
 * Wo (its extra lanes compute values that are no outputs: stored whole when they fall inside the
 * band, where later positions overwrite them, else left out by a masked store). A register tile is R output channels x V
 * positions: R V accumulators (8 or 12; the shape chosen per layer, gc_tile_shape), initialised
 * with the bias; per tap, V vector loads, R weight broadcasts, R V FMAs. The weights are packed
 * (gc_pack: blocks of R channels, the R weights of a tap side by side; once per call, or once for
 * all by the caller) so a tile walks them from one pointer; the V input pointers plus off[t]
 * address the loads. The positions loop runs outside the output-channel blocks so the few buffer
 * rows a tile reads stay in L1 for all Kg channels. A last tile short of positions repeats the
 * last one (recomputes it and stores the same values again); one short of channels computes the
 * missing ones with zero weights and stores nothing for them: no more compiled tile shapes than
 * the six of gc_shapes.
 *
 * Tasks (B G bands of them) go to decaf's threads as they come; each thread has its own buffer. */

#ifdef GC_SIMD
enum { GC_LANES = 8, GC_ACC = 12, GC_MAXR = 4, GC_MAXV = 8 };

typedef struct {
    int Cg, Kg;          /* input and output channels per group */
    int T;               /* taps per output: Cg kh kw */
    int phases;          /* column phases stored: min(sw, kw) (tap j reads phase j % sw) */
    int nv;              /* positions (vectors of 8 outputs) per output row: ceil(Wo / 8) */
    int Wq;              /* floats per buffer row */
    int band_rows;       /* output rows per task (the last band may have fewer) */
    int bands;           /* tasks per (image, group) */
    int Hq;              /* buffer rows: the padded input rows a full band reads */
    int shape, R, V;     /* the register tile: gc_shapes[shape] */
    int nkb;             /* output-channel blocks per group: ceil(Kg / R) */
    ptrdiff_t gpacked;   /* floats of a group's packed weights: nkb T R (gc_pack) */
    ptrdiff_t pstride;   /* floats per phase plane: Hq Wq + 8 of slack (gc_fill's last vectors) */
    ptrdiff_t chan;      /* floats per channel in the buffer: phases pstride */
    ptrdiff_t buf;       /* floats of one thread's buffer (a multiple of 16) */
    ptrdiff_t offs;      /* floats (ints) of off[T], rounded to 16 */
    ptrdiff_t packed;    /* floats of the packed weights, rounded to 16 */
} gc_layout;

static ptrdiff_t round16(ptrdiff_t n)
{
    return (n + 15) / 16 * 16;
}

/* The register tiles compiled (R output channels x V positions), and the cycles one tap of each
 * takes, measured relative to 4x3 (benchmarks/bench_grouped.py's layers, one thread, on Zen 3):
 * 4x3 and 4x2 keep the 2 FMA pipes about equally busy (4x2's 8 accumulators just cover the FMA
 * latency); 3x4 a little less; 2x6 and 1x8 are bound by their loads (V loads for R V FMAs). */
static const struct { int R, V; float cycles; } gc_shapes[] = {
    {4, 3, 6.0f}, {4, 2, 4.4f}, {3, 4, 6.5f}, {2, 6, 8.5f}, {2, 4, 4.8f}, {1, 8, 6.4f},
};
enum { GC_SHAPES = sizeof gc_shapes / sizeof gc_shapes[0] };

/* Output channels per tile for Kg per group: of 4, 3 and 2 the one that computes fewest missing
 * channels in a last partial block (larger first on a tie); 1 only for Kg = 1. It fixes the form
 * of the packed weights (gc_pack), so it depends on Kg alone. */
static int gc_tile_rows(int Kg)
{
    if (Kg <= 1)
        return 1;
    int best = 4;
    for (int r = 3; r >= 2; --r)
        if ((Kg + r - 1) / r * r < (Kg + best - 1) / best * best)
            best = r;
    return best;
}

/* Of the tiles with gc_tile_rows(Kg) channels, the one with the fewest estimated cycles for P
 * positions per band, counting the repeated positions a last partial tile computes. */
static int gc_tile_shape(int Kg, int P)
{
    const int R = gc_tile_rows(Kg);
    int best = -1;
    float best_cost = 0.0f;
    for (int s = 0; s < GC_SHAPES; ++s) {
        if (gc_shapes[s].R != R)
            continue;
        const int V = gc_shapes[s].V;
        const float cost = (float)((P + V - 1) / V) * gc_shapes[s].cycles;
        if (best < 0 || cost < best_cost)
            best = s, best_cost = cost;
    }
    return best;
}

static gc_layout gc_make_layout(const decaf_conv_geom *g, int threads)
{
    gc_layout L;
    if (threads < 1)
        threads = 1;
    L.Cg = g->C / g->G;
    L.Kg = g->K / g->G;
    L.T = L.Cg * g->kh * g->kw;
    L.phases = g->sw < g->kw ? g->sw : g->kw;
    L.nv = (g->Wo + GC_LANES - 1) / GC_LANES;
    /* the last position of a row starts at column (nv - 1) 8 and its lanes reach 7 further, plus
     * (kw - 1) / sw for the last tap */
    L.Wq = L.nv * GC_LANES + (g->kw - 1) / g->sw;
    /* Bands: one per (image, group) when there are at least 4 such tasks per thread, else the
     * fewest bands that make 4 (6 groups at batch 1 on 2 threads: 2 bands each, 12 tasks). The
     * threads take tasks as they come (a thread of a busy machine that lost its core holds up
     * the others by one task, not by its half). */
    const ptrdiff_t bg = (ptrdiff_t)g->B * g->G;
    int bands = 1;
    if (threads > 1)
        while (bands < g->Ho && bg * bands < 4 * threads) ++bands;
    L.band_rows = (g->Ho + bands - 1) / bands;
    if (L.band_rows < 1)
        L.band_rows = 1;
    L.bands = (g->Ho + L.band_rows - 1) / L.band_rows;
    L.Hq = (L.band_rows - 1) * g->sh + g->kh;
    L.shape = gc_tile_shape(L.Kg, L.band_rows * L.nv);
    L.R = gc_shapes[L.shape].R;
    L.V = gc_shapes[L.shape].V;
    L.nkb = (L.Kg + L.R - 1) / L.R;
    L.gpacked = (ptrdiff_t)L.nkb * L.T * L.R;
    L.pstride = (ptrdiff_t)L.Hq * L.Wq + GC_LANES;
    L.chan = L.phases * L.pstride;
    L.buf = round16(L.Cg * L.chan);
    L.offs = round16(L.T);   /* (an int per tap, stored in the floats: both are 4 bytes) */
    L.packed = round16(g->G * L.gpacked);   /* (decaf_grouped_conv_packed_size, rounded) */
    return L;
}

/* The buffer of a task (see the top of the file): rows oh_lo sh - pad_top + r of the input, r < rows. */
static void gc_fill(const gc_layout *L, const decaf_conv_geom *g, const float *xg, int oh_lo, int oh_hi,
                    float *buf)
{
    const int rows = (oh_hi - oh_lo - 1) * g->sh + g->kh, r0 = oh_lo * g->sh - g->pad_top;
    const int W = g->W, sw = g->sw, Wq = L->Wq;
    const ptrdiff_t phase = L->pstride;
    if (sw == 2) {
        /* Buffer column m of phase q holds input column 2 m + q - pad_left. Per 8 columns m of a
         * row: two masked loads of the 16 input columns from 2 m - pad_left (lanes outside the
         * image are 0 and touch no memory), split by shuffles into the 8 even ones (phase 0) and
         * the 8 odd ones (phase 1). A row's last vector may run past Wq into the plane's next row,
         * written after it, or into the 8 floats of slack after each plane. */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i none = _mm256_set1_epi32(-1), Wv = _mm256_set1_epi32(W);
        for (int c = 0; c < L->Cg; ++c) {
            const float *xc = xg + (ptrdiff_t)c * g->H * W;
            float *d = buf + c * L->chan;
            for (int r = 0; r < rows; ++r) {
                float *d0 = d + (ptrdiff_t)r * Wq, *d1 = d0 + phase;
                const int ih = r0 + r;
                if (ih < 0 || ih >= g->H) {
                    for (int m = 0; m < Wq; m += GC_LANES) {
                        _mm256_storeu_ps(d0 + m, _mm256_setzero_ps());
                        if (L->phases > 1)
                            _mm256_storeu_ps(d1 + m, _mm256_setzero_ps());
                    }
                    continue;
                }
                const float *xr = xc + (ptrdiff_t)ih * W;
                for (int m = 0; m < Wq; m += GC_LANES) {
                    const int i0 = 2 * m - g->pad_left;   /* the input column of lane 0 of a */
                    const __m256i ca = _mm256_add_epi32(_mm256_set1_epi32(i0), lane);
                    const __m256i cb = _mm256_add_epi32(ca, _mm256_set1_epi32(8));
                    const __m256i ina = _mm256_and_si256(_mm256_cmpgt_epi32(ca, none), _mm256_cmpgt_epi32(Wv, ca));
                    const __m256i inb = _mm256_and_si256(_mm256_cmpgt_epi32(cb, none), _mm256_cmpgt_epi32(Wv, cb));
                    const __m256 a = _mm256_maskload_ps(xr + i0, ina), b = _mm256_maskload_ps(xr + i0 + 8, inb);
                    /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6; then the 64-bit pairs reordered */
                    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
                    _mm256_storeu_ps(d0 + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev),
                                                                                     _MM_SHUFFLE(3, 1, 2, 0))));
                    if (L->phases > 1) {
                        const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
                        _mm256_storeu_ps(d1 + m, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od),
                                                                                         _MM_SHUFFLE(3, 1, 2, 0))));
                    }
                }
            }
        }
        return;
    }
    if (sw == 1) {
        /* Each buffer row in vectors of 8 columns: column m holds input column m - pad_left, read
         * by a masked load (lanes outside the image are 0 and touch no memory): no calls and no
         * per-element tests for these short rows. The last vector of a row may run past Wq into
         * the next row, written after it, or into the 8 floats of slack after each plane. */
        int lo, hi;
        decaf_valid_outputs(-g->pad_left, 1, W, Wq, &lo, &hi);
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i lo1 = _mm256_set1_epi32(lo - 1), hiv = _mm256_set1_epi32(hi);
        for (int c = 0; c < L->Cg; ++c) {
            const float *xc = xg + (ptrdiff_t)c * g->H * W;
            for (int r = 0; r < rows; ++r) {
                float *dr = buf + c * L->chan + (ptrdiff_t)r * Wq;
                const int ih = r0 + r;
                if (ih < 0 || ih >= g->H) {
                    for (int m = 0; m < Wq; m += GC_LANES) _mm256_storeu_ps(dr + m, _mm256_setzero_ps());
                    continue;
                }
                const float *xr = xc + (ptrdiff_t)ih * W;
                for (int m = 0; m < Wq; m += GC_LANES) {
                    const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(m), lane);
                    const __m256i inside = _mm256_and_si256(_mm256_cmpgt_epi32(col, lo1), _mm256_cmpgt_epi32(hiv, col));
                    _mm256_storeu_ps(dr + m, _mm256_maskload_ps(xr + (m - g->pad_left), inside));
                }
            }
        }
        return;
    }
    for (int q = 0; q < L->phases; ++q) {   /* sw > 2: column by column */
        /* buffer column m holds input column m sw + q - pad_left: inside the image for m in [lo, hi) */
        int lo, hi;
        decaf_valid_outputs(q - g->pad_left, sw, W, Wq, &lo, &hi);
        for (int c = 0; c < L->Cg; ++c) {
            const float *xc = xg + (ptrdiff_t)c * g->H * W;
            float *d = buf + c * L->chan + q * phase;
            for (int r = 0; r < rows; ++r) {
                float *dr = d + (ptrdiff_t)r * Wq;
                const int ih = r0 + r;
                if (ih < 0 || ih >= g->H) {
                    memset(dr, 0, sizeof(float) * (size_t)Wq);
                    continue;
                }
                const float *xr = xc + (ptrdiff_t)ih * W;   /* xr[m sw + q - pad_left]: column m */
                for (int m = 0; m < lo; ++m) dr[m] = 0.0f;
                for (int m = lo; m < hi; ++m) dr[m] = xr[(ptrdiff_t)m * sw + q - g->pad_left];
                for (int m = hi; m < Wq; ++m) dr[m] = 0.0f;
            }
        }
    }
}

/* The weights of group gi in blocks of R output channels, tap-major inside a block, the R weights
 * of a tap side by side:
 *     wt[(kb T + t) R + r] = w[gi Kg + kb R + r][t]   (t = (c kh + i) kw + j; 0 past Kg)
 * so a tile walks one contiguous run of T R floats (a last block past Kg reads zeros for the
 * missing channels and stores none of them). */
static void gc_pack(const gc_layout *L, const float *w, float *wt, int gi)
{
    const int R = L->R, T = L->T;
    for (int kb = 0; kb < L->nkb; ++kb)
        for (int r = 0; r < R; ++r) {
            const int k = kb * R + r;
            const float *wk = w + ((ptrdiff_t)gi * L->Kg + k) * T;
            float *d = wt + (ptrdiff_t)kb * T * R + r;
            for (int t = 0; t < T; ++t) d[(ptrdiff_t)t * R] = k < L->Kg ? wk[t] : 0.0f;
        }
}

/* lanes_mask + 8 - n: the first n lanes set. */
static const int32_t lanes_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Every tile of a band: output rows [oh_lo, oh_hi) of the group's Kg channels. wpg: the group's
 * packed weights (gc_pack), bg: its bias (NULL: none), yg: its first output plane of
 * image b. */
static inline __attribute__((always_inline)) void gc_band(
    const gc_layout *L, const decaf_conv_geom *g, const float *buf, const int *off, const float *wpg,
    const float *bg, float *yg, int oh_lo, int oh_hi, const int R, const int V)
{
    const int P = (oh_hi - oh_lo) * L->nv, T = L->T, Kg = L->Kg, Wo = g->Wo, nv = L->nv;
    const ptrdiff_t plane = (ptrdiff_t)g->Ho * Wo, row_step = (ptrdiff_t)g->sh * L->Wq;
    for (int p0 = 0; p0 < P; p0 += V) {
        const float *xb[GC_MAXV];
        ptrdiff_t at[GC_MAXV];
        __m256i mask[GC_MAXV];
        int full[GC_MAXV];
        _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) {
            const int p = p0 + v < P ? p0 + v : P - 1;   /* past the end: the last one again */
            const int row = p / nv, ow0 = (p % nv) * GC_LANES, n = Wo - ow0 < GC_LANES ? Wo - ow0 : GC_LANES;
            xb[v] = buf + row * row_step + ow0;            /* where tap (0, 0, 0) reads */
            at[v] = (ptrdiff_t)(oh_lo + row) * Wo + ow0;   /* output offset in a plane */
            /* a row's partial last vector is stored whole when its extra lanes stay inside the
             * band (they run into the next rows of the plane, which later positions of this band
             * overwrite); else, past the band lie other bands' or channels' outputs, a masked
             * store (slow on AMD: several times a plain one) */
            full[v] = n == GC_LANES || at[v] + GC_LANES <= (ptrdiff_t)oh_hi * Wo;
            mask[v] = _mm256_loadu_si256((const __m256i *)(lanes_mask + GC_LANES - n));
        }
        for (int kb = 0; kb < L->nkb; ++kb) {
            const float *wp = wpg + (ptrdiff_t)kb * T * R;
            float *yr[GC_MAXR];
            __m256 acc[GC_ACC];
            _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r) {
                const int k = kb * R + r < Kg ? kb * R + r : Kg - 1;   /* past Kg: not stored */
                yr[r] = yg + k * plane;
                const __m256 b = _mm256_set1_ps(bg ? bg[k] : 0.0f);
                _Pragma("GCC unroll 12") for (int v = 0; v < V; ++v) acc[r * V + v] = b;
            }
            /* 16 ymm registers: the R V accumulators, and either the V inputs of a tap plus one
             * weight at a time (4x3, 4x2, 2x4) or its R weights plus one input at a time (3x4,
             * 2x6, 1x8), whichever fits without spilling */
            if (R * V + V + 1 <= 16) {
                for (int t = 0; t < T; ++t, wp += R) {
                    const int o = off[t];
                    __m256 xv[GC_MAXV];
                    _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) xv[v] = _mm256_loadu_ps(xb[v] + o);
                    _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r) {
                        const __m256 wv = _mm256_broadcast_ss(wp + r);
                        _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v)
                            acc[r * V + v] = _mm256_fmadd_ps(xv[v], wv, acc[r * V + v]);
                    }
                }
            } else {
                for (int t = 0; t < T; ++t, wp += R) {
                    const int o = off[t];
                    __m256 wv[GC_MAXR];
                    _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r) wv[r] = _mm256_broadcast_ss(wp + r);
                    _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) {
                        const __m256 xv = _mm256_loadu_ps(xb[v] + o);
                        _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r)
                            acc[r * V + v] = _mm256_fmadd_ps(xv, wv[r], acc[r * V + v]);
                    }
                }
            }
            _Pragma("GCC unroll 4") for (int r = 0; r < R; ++r)
                _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) {
                    if (kb * R + r >= Kg)
                        break;
                    if (full[v])
                        _mm256_storeu_ps(yr[r] + at[v], acc[r * V + v]);
                    else
                        _mm256_maskstore_ps(yr[r] + at[v], mask[v], acc[r * V + v]);
                }
        }
    }
}

static void gc_task(const gc_layout *L, const decaf_conv_geom *g, const float *x, const float *wp,
                    const float *bias, float *y, float *buf, const int *off, const decaf_epilogue *ep,
                    ptrdiff_t task)
{
    /* task = (b G + group) bands + band */
    const int band = (int)(task % L->bands), group = (int)(task / L->bands % g->G);
    const int b = (int)(task / L->bands / g->G);
    const int oh_lo = band * L->band_rows, oh_hi = oh_lo + L->band_rows < g->Ho ? oh_lo + L->band_rows : g->Ho;
    const ptrdiff_t plane = (ptrdiff_t)g->Ho * g->Wo;
    const ptrdiff_t first = (ptrdiff_t)b * g->K + (ptrdiff_t)group * L->Kg;   /* its first output channel */
    gc_fill(L, g, x + ((ptrdiff_t)b * g->C + (ptrdiff_t)group * L->Cg) * g->H * g->W, oh_lo, oh_hi, buf);
    const float *wpg = wp + group * L->gpacked;
    const float *bg = bias ? bias + (ptrdiff_t)group * L->Kg : NULL;
    float *yg = y + first * plane;
    switch (L->shape) {   /* (the order of gc_shapes) */
    case 0: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 4, 3); break;
    case 1: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 4, 2); break;
    case 2: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 3, 4); break;
    case 3: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 2, 6); break;
    case 4: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 2, 4); break;
    default: gc_band(L, g, buf, off, wpg, bg, yg, oh_lo, oh_hi, 1, 8); break;
    }
    if (ep)   /* (the bias is in) */
        for (int k = 0; k < L->Kg; ++k)
            decaf_epilogue_at(ep, y, (first + k) * plane + (ptrdiff_t)oh_lo * g->Wo,
                              (ptrdiff_t)(oh_hi - oh_lo) * g->Wo, 0.0f);
}
#endif

int decaf_grouped_conv_supported(const decaf_conv_geom *g)
{
#ifdef GC_SIMD
    if (!(g->G > 1 && g->C % g->G == 0 && g->K % g->G == 0 && !(g->C == g->G && g->K == g->G)
          && g->dh == 1 && g->dw == 1 && g->kh >= 1 && g->kw >= 1 && g->sh >= 1 && g->sw >= 1
          && g->Ho >= 1 && g->Wo >= 1))
        return 0;
    /* off[] holds offsets into a thread's buffer as ints: the largest buffer (one band) must fit */
    const gc_layout L = gc_make_layout(g, 1);
    return L.buf < INT_MAX;
#else
    (void)g;
    return 0;
#endif
}

ptrdiff_t decaf_grouped_conv_work_size(const decaf_conv_geom *g, int threads)
{
#ifdef GC_SIMD
    const gc_layout L = gc_make_layout(g, threads);
    return L.offs + L.packed + (ptrdiff_t)(threads < 1 ? 1 : threads) * L.buf;
#else
    (void)g, (void)threads;
    return 0;
#endif
}

/* The forward from w (packed NULL: packed into work here) or from weights packed before. */
static void gc_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w, const float *packed,
                       const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const int Cg = g->C / g->G;
    const ptrdiff_t macs = (ptrdiff_t)g->B * g->K * g->Ho * g->Wo * Cg * g->kh * g->kw;
#ifdef GC_SIMD
    if (threads < 1)
        threads = 1;
    const gc_layout L = gc_make_layout(g, threads);
    /* work: off[T] (ints), the packed weights (unused when given), then a buffer per thread */
    int *off = (int *)work;   /* (int and float are both 4 bytes) */
    float *wp = packed ? (float *)packed : work + L.offs;
    for (int c = 0; c < Cg; ++c)
        for (int i = 0; i < g->kh; ++i)
            for (int j = 0; j < g->kw; ++j)
                off[(c * g->kh + i) * g->kw + j] = (int)(c * L.chan + (j % g->sw) * L.pstride
                                                         + (ptrdiff_t)i * L.Wq + j / g->sw);
    const ptrdiff_t tasks = (ptrdiff_t)g->B * g->G * L.bands;
    int nt = macs < 32768 ? 1 : threads;   /* (as decaf_threads_for: waking the team costs more) */
    if (nt > tasks)
        nt = (int)(tasks < 1 ? 1 : tasks);
    #pragma omp parallel num_threads(nt)
    {
        if (!packed) {
            #pragma omp for schedule(dynamic)
            for (int gi = 0; gi < g->G; ++gi) gc_pack(&L, w, wp + gi * L.gpacked, gi);
            /* (the loop's barrier: every group is packed before a task reads it) */
        }
        float *buf = work + L.offs + L.packed + (ptrdiff_t)decaf_thread_num() * L.buf;
        #pragma omp for schedule(dynamic)
        for (ptrdiff_t task = 0; task < tasks; ++task)
            gc_task(&L, g, x, wp, bias, y, buf, off, ep, task);
    }
#else
    /* Without AVX2 (decaf_grouped_conv_supported says 0, so conv.c runs im2col + GEMM instead):
     * the same sum, plainly, so that a call is still right. One (image, output channel) plane per
     * iteration. The "packed" weights of this variant are w itself. */
    (void)work;
    if (packed)
        w = packed;
    const int Kg = g->K / g->G;
    const int nt = macs < 32768 ? 1 : (threads < 1 ? 1 : threads);
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (ptrdiff_t bk = 0; bk < (ptrdiff_t)g->B * g->K; ++bk) {
        const int b = (int)(bk / g->K), k = (int)(bk % g->K), group = k / Kg;
        float *yp = y + bk * g->Ho * g->Wo;
        for (int p = 0; p < g->Ho * g->Wo; ++p) yp[p] = bias ? bias[k] : 0.0f;
        for (int c = 0; c < Cg; ++c) {
            const float *xc = x + ((ptrdiff_t)b * g->C + (ptrdiff_t)group * Cg + c) * g->H * g->W;
            for (int i = 0; i < g->kh; ++i) {
                int oh_lo, oh_hi;
                decaf_valid_outputs(i - g->pad_top, g->sh, g->H, g->Ho, &oh_lo, &oh_hi);
                for (int j = 0; j < g->kw; ++j) {
                    int ow_lo, ow_hi;
                    decaf_valid_outputs(j - g->pad_left, g->sw, g->W, g->Wo, &ow_lo, &ow_hi);
                    const float wv = w[(((ptrdiff_t)k * Cg + c) * g->kh + i) * g->kw + j];
                    for (int oh = oh_lo; oh < oh_hi; ++oh) {
                        const float *row = xc + (ptrdiff_t)(oh * g->sh + i - g->pad_top) * g->W + j - g->pad_left;
                        float *out = yp + (ptrdiff_t)oh * g->Wo;
                        for (int ow = ow_lo; ow < ow_hi; ++ow) out[ow] += wv * row[(ptrdiff_t)ow * g->sw];
                    }
                }
            }
        }
        decaf_epilogue_at(ep, y, bk * g->Ho * g->Wo, (ptrdiff_t)g->Ho * g->Wo, 0.0f);
    }
#endif
}

void decaf_grouped_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                                const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    gc_forward(g, threads, x, w, NULL, bias, y, work, ep);
}

ptrdiff_t decaf_grouped_conv_packed_size(const decaf_conv_geom *g)
{
    const ptrdiff_t T = (ptrdiff_t)(g->C / g->G) * g->kh * g->kw;
#ifdef GC_SIMD
    const int Kg = g->K / g->G, R = gc_tile_rows(Kg);
    return g->G * ((Kg + R - 1) / R) * T * R;
#else
    return g->K * T;
#endif
}

void decaf_grouped_conv_pack(const decaf_conv_geom *g, const float *w, float *packed)
{
#ifdef GC_SIMD
    gc_layout L;   /* (the fields gc_pack reads: the packed form depends on C, K, G, kh, kw alone) */
    L.Kg = g->K / g->G;
    L.T = (g->C / g->G) * g->kh * g->kw;
    L.R = gc_tile_rows(L.Kg);
    L.nkb = (L.Kg + L.R - 1) / L.R;
    L.gpacked = (ptrdiff_t)L.nkb * L.T * L.R;
    for (int gi = 0; gi < g->G; ++gi) gc_pack(&L, w, packed + gi * L.gpacked, gi);
#else
    memcpy(packed, w, sizeof(float) * (size_t)decaf_grouped_conv_packed_size(g));
#endif
}

void decaf_grouped_conv_forward_packed(const decaf_conv_geom *g, int threads, const float *x, const float *packed,
                                       const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    gc_forward(g, threads, x, NULL, packed, bias, y, work, ep);
}

int decaf_grouped_conv_preferred(const decaf_conv_geom *g, int threads)
{
    /* benchmarks/bench_grouped.py, 2 threads, batch 1 and 16, Zen 3 (AVX2): with 8 or fewer
     * channels per group on either side (RegNetY-400MF's group width 8, ResNeXt-50's 4 and 8) this
     * kernel ran 1.3-7x faster than im2col + GEMM per group; with 16 and 32 on both sides (ResNeXt's
     * last two stages) each group's GEMM is deep and wide enough for the BLAS (0.6-0.9x here). */
    (void)threads;
    return decaf_grouped_conv_supported(g) && (g->C / g->G <= 8 || g->K / g->G <= 8);
}
