#include "winograd.h"

#include <stddef.h>
#include <string.h>

#include "activation.h"
#include "gemm.h"
#include "threads.h"

/* Winograd F(4x4, 3x3): a 4x4 block of outputs of a 3x3 convolution from a 6x6 block of inputs.
 *
 * One dimension, F(4, 3): the 4 outputs y_i = sum_s d_{i+s} g_s of a 3-tap filter g on 6 inputs d
 * are the coefficients of a product of polynomials, computed by evaluating at the points 0, 1, -1,
 * 2, -2 and infinity (Toom-Cook), multiplying pointwise (6 multiplies instead of 12) and
 * interpolating back:
 *     y = A^T [ (G g) * (B^T d) ]
 * with, for the finite points p and N_p = prod_{q != p} (p - q) over the other finite points
 * (4, -6, -6, 24, 24):
 *     G   row p = (1, p, p^2) / N_p, row infinity = (0, 0, 1)
 *     A^T column p = (1, p, p^2, p^3), column infinity = (0, 0, 0, 1)
 *     B^T row p = the coefficients (x^0 .. x^5) of prod_{q != p} (x - q) over the finite points,
 *         row infinity those of x (x^2 - 1)(x^2 - 4)
 * which gives
 *     B^T = [ 4  0 -5  0  1  0 ]    G = [  1/4     0     0  ]    A^T = [ 1  1  1  1  1  0 ]
 *           [ 0 -4 -4  1  1  0 ]        [ -1/6  -1/6  -1/6  ]          [ 0  1 -1  2 -2  0 ]
 *           [ 0  4 -4 -1  1  0 ]        [ -1/6   1/6  -1/6  ]          [ 0  1  1  4  4  0 ]
 *           [ 0 -2 -1  2  1  0 ]        [  1/24  1/12  1/6  ]          [ 0  1 -1  8 -8  1 ]
 *           [ 0  2 -1 -2  1  0 ]        [  1/24 -1/12  1/6  ]
 *           [ 0  4  0 -5  0  1 ]        [  0     0     1    ]
 * (the denominators all in G, so the transforms of the inputs and outputs, done per call, are
 * integer). Two dimensions nest it: Y = A^T [ (G g G^T) * (B^T d B) ] A for a 6x6 tile d.
 *
 * Summed over input channels c, output channel k's tile is A^T [ sum_c U[k, c] * V[c] ] A with
 * U = G g G^T (36 values per filter) and V = B^T d B (36 per input tile): for each of the 36
 * positions xi of the 6x6, one matrix product
 *     M[xi] (K, tiles) = U[xi] (K, C) . V[xi] (C, tiles)
 * which is where the time goes: 36 multiply-adds per tile of 16 outputs and per (k, c), where the
 * direct convolution does 16 * 9 = 144, 4x as many.
 *
 * The tiles: output tile (ti, tj) of an image covers outputs rows 4 ti .. 4 ti + 3, columns 4 tj ..
 * 4 tj + 3 (clipped to Ho, Wo), and reads inputs rows 4 ti - pad_top .. + 5, columns 4 tj -
 * pad_left .. + 5, zeros outside the image (the padding, and the partial tiles' overhang). All
 * images share one tile space: tile t = (b th + ti) tw + tj, with th = ceil(Ho / 4), tw =
 * ceil(Wo / 4) tiles per column and per row of an image.
 *
 * The forward runs through the tiles in blocks of at most block_tiles() tiles, each block in three
 * phases:
 *   1. input transform, channel by channel:    V[xi][c][t]  (t the tile's index in the block)
 *   2. 36 GEMMs, position by position:          M[xi] = U[xi] V[xi]   (decaf_sgemm_serial)
 *   3. output transform, channel by channel:   y, then the bias and epilogue on the rows written.
 * With enough tiles each thread takes a contiguous range of them and runs its blocks alone, in its
 * own scratch (by_tiles); with few, the threads share each block, the phases split by input
 * channels, positions and output channels, with a barrier after each (tiles_shared).
 *
 * The transforms take a group of LANES consecutive tiles at once, with the tiles innermost, so that
 * their loops are vector operations across tiles. A group is a piece of one tile row when the rows
 * hold LANES tiles or more, and then, away from the image's edges, it is read from x's rows and
 * written into y's rows in place; narrower images fill a group from several tile rows, through
 * small buffers (group_size, transform_inputs, transform_outputs). */

enum { ALPHA = 6, POS = ALPHA * ALPHA, LANES = 8 };

/* ---- geometry ----------------------------------------------------------------------------------- */

int decaf_winograd_supported(const decaf_conv_geom *g)
{
    return g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 && g->G == 1
           && g->B >= 1 && g->C >= 1 && g->K >= 1 && g->H >= 1 && g->W >= 1 && g->Ho >= 1 && g->Wo >= 1;
}

static int tiles_h(const decaf_conv_geom *g) { return (g->Ho + 3) / 4; }
static int tiles_w(const decaf_conv_geom *g) { return (g->Wo + 3) / 4; }

static ptrdiff_t tile_count(const decaf_conv_geom *g)
{
    return (ptrdiff_t)g->B * tiles_h(g) * tiles_w(g);
}

/* Tiles per block: a position's slices of V (C, n) and M (K, n) about 128 KB together, so that a
 * GEMM's operands besides U stay in L2; at least 32 and at most 256 tiles, a multiple of LANES.
 * (On Zen 3, capping it at 64 or 128 instead changed ResNet's and DenseNet's layers by less than
 * the noise of a shared machine, +-5 %.) */
static ptrdiff_t block_tiles(const decaf_conv_geom *g)
{
    ptrdiff_t n = 32768 / ((ptrdiff_t)g->C + g->K) / LANES * LANES;
    n = n < 32 ? 32 : n > 256 ? 256 : n;
    const ptrdiff_t tiles = tile_count(g);
    return tiles < n ? tiles : n;
}

/* 1 when each thread takes its own range of tiles (all 36 GEMMs of its blocks on its own, no
 * barrier, but every thread reads all of U), 0 when the threads share each block (the 36 GEMMs
 * split between them, each reading its positions of U only; a barrier after each phase). Own
 * ranges from a full block per thread on: measured with 2 threads on Zen 3, they were 15-20 %
 * faster at batch 16 (64 ch at 56x56, 512 at 7x7), shared blocks 10-15 % faster with few tiles
 * (batch 1 at 28x28 with 128 ch, batch 4 at 14x14 with 256). */
static int by_tiles(const decaf_conv_geom *g, int threads)
{
    return threads > 1 && tile_count(g) >= (ptrdiff_t)threads * block_tiles(g);
}

ptrdiff_t decaf_winograd_packed_size(const decaf_conv_geom *g)
{
    return (ptrdiff_t)POS * g->K * g->C;
}

/* floats of one block's V and M, and LANES more after M (see transform_outputs) */
static ptrdiff_t block_floats(const decaf_conv_geom *g)
{
    return (ptrdiff_t)POS * ((ptrdiff_t)g->C + g->K) * block_tiles(g) + LANES;
}

ptrdiff_t decaf_winograd_work_size(const decaf_conv_geom *g, int threads)
{
    const int nt = threads < 1 ? 1 : threads;
    return (by_tiles(g, nt) ? nt : 1) * block_floats(g);
}

/* A run of tiles: tiles tj .. tj + n of tile row ti of image b, the first being tile tl of its
 * block. */
typedef struct {
    int b, ti, tj, n;
    ptrdiff_t tl;
} tile_run;

/* The run that starts at tile t of the block t0 .. t1: up to the end of the tile row or block. */
static tile_run run_at(const decaf_conv_geom *g, ptrdiff_t t0, ptrdiff_t t, ptrdiff_t t1)
{
    const int tw = tiles_w(g), th = tiles_h(g);
    tile_run r;
    r.b = (int)(t / ((ptrdiff_t)th * tw));   /* t = (b th + ti) tw + tj */
    r.ti = (int)(t / tw % th);
    r.tj = (int)(t % tw);
    r.n = (int)(t1 - t < tw - r.tj ? t1 - t : tw - r.tj);
    r.tl = t - t0;
    return r;
}

/* ---- the weight transform: U[xi][k][c] = (G w[k, c] G^T)[xi] ----------------------------------- */

/* o = G f for a 3-vector f (in double: U is rounded once, to float, at the end; multiplied by
 * 1/6 and 1/24 rounded to double, 1e-16 relative, rather than divided: 4x faster). */
static void g_times(const double f[3], double o[ALPHA])
{
    const double sixth = 1.0 / 6.0, f24th = 1.0 / 24.0;
    o[0] = f[0] * 0.25;
    o[1] = -(f[0] + f[1] + f[2]) * sixth;
    o[2] = -(f[0] - f[1] + f[2]) * sixth;
    o[3] = (f[0] + 2.0 * f[1] + 4.0 * f[2]) * f24th;
    o[4] = (f[0] - 2.0 * f[1] + 4.0 * f[2]) * f24th;
    o[5] = f[2];
}

/* out[xi] = (G f G^T)[xi] for one 3x3 filter f (row-major). */
static void filter_transform(const float *f, double out[POS])
{
    double cols[ALPHA][3], col[3], row[3], o[ALPHA];
    for (int s = 0; s < 3; ++s) {   /* cols[.][s] = G f[:, s] */
        col[0] = f[s], col[1] = f[3 + s], col[2] = f[6 + s];
        g_times(col, o);
        for (int a = 0; a < ALPHA; ++a) cols[a][s] = o[a];
    }
    for (int a = 0; a < ALPHA; ++a) {   /* row a of G f G^T */
        row[0] = cols[a][0], row[1] = cols[a][1], row[2] = cols[a][2];
        g_times(row, out + a * ALPHA);
    }
}

/* filters per chunk of decaf_winograd_pack: each chunk's 36 values per filter are written as 36
 * contiguous runs (one per position), not 36 scattered floats per filter (512 x 512 weights: U's
 * positions are 1 MB apart; per filter that cost a TLB miss per value, 84 ms in all) */
enum { PACK_CHUNK = 256 };

void decaf_winograd_pack(const decaf_conv_geom *g, const float *w, float *u)
{
    const ptrdiff_t kc = (ptrdiff_t)g->K * g->C;   /* filter i = k C + c; U[xi] is (K, C), row-major */
    const ptrdiff_t chunks = (kc + PACK_CHUNK - 1) / PACK_CHUNK;
    #pragma omp parallel for num_threads(decaf_threads_for(kc * 100)) schedule(static)
    for (ptrdiff_t ci = 0; ci < chunks; ++ci) {
        const ptrdiff_t i0 = ci * PACK_CHUNK, n = kc - i0 < PACK_CHUNK ? kc - i0 : PACK_CHUNK;
        double out[PACK_CHUNK][POS];
        for (ptrdiff_t l = 0; l < n; ++l)
            filter_transform(w + (i0 + l) * 9, out[l]);
        for (int q = 0; q < POS; ++q)
            for (ptrdiff_t l = 0; l < n; ++l) u[q * kc + i0 + l] = (float)out[l][q];
    }
}

/* ---- the input transform: V[xi][c][t] = (B^T d B)[xi] ------------------------------------------ */

/* The 1-D input transform of `count` vectors side by side: vector l has the values d_r = d[r is +
 * l dl] (r < 6) and gets o[i os + l ol] = (B^T d)_i. Inlined with constant strides (dl = ol = 1),
 * the loop over l is a vector loop. */
static inline void bt_1d(float *restrict o, ptrdiff_t os, ptrdiff_t ol, const float *restrict d, ptrdiff_t is,
                         ptrdiff_t dl, int count)
{
    for (int l = 0; l < count; ++l) {
        const float *p = d + l * dl;
        const float d0 = p[0], d1 = p[is], d2 = p[2 * is], d3 = p[3 * is], d4 = p[4 * is], d5 = p[5 * is];
        float *q = o + l * ol;
        q[0] = 4.0f * d0 - 5.0f * d2 + d4;
        q[os] = -4.0f * (d1 + d2) + (d3 + d4);
        q[2 * os] = 4.0f * (d1 - d2) + (d4 - d3);
        q[3 * os] = 2.0f * (d3 - d1) + (d4 - d2);
        q[4 * os] = 2.0f * (d1 - d3) + (d4 - d2);
        q[5 * os] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* d[s][l] = a[4 l + s] for s < 4, l < LANES: 4 LANES values into their 4 phases (GCC vectorises
 * this as a deinterleave: loads and permutes, no value-by-value gather). */
static inline void deinterleave4(const float *restrict a, float d[4][LANES])
{
    for (int l = 0; l < LANES; ++l)
        for (int s = 0; s < 4; ++s) d[s][l] = a[4 * l + s];
}

/* a[4 l + s] = d[s][l]: the inverse */
static inline void interleave4(const float d[4][LANES], float *restrict a)
{
    for (int l = 0; l < LANES; ++l)
        for (int s = 0; s < 4; ++s) a[4 * l + s] = d[s][l];
}

/* dst[r ld + c] = x[y0 + r][x0 + c] of the plane (H, W) for r < 6, c < len; zero outside it.
 * (Its loops stay loops: GCC would call memset and memcpy for a few dozen floats each.) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void copy_span(const float *plane, int H, int W, int y0, int x0, int len, float *dst, int ld)
{
    const int c0 = x0 < 0 ? (-x0 < len ? -x0 : len) : 0;   /* columns c0 .. c1 are inside */
    int c1 = W - x0 < len ? W - x0 : len;
    c1 = c1 < c0 ? c0 : c1;
    for (int r = 0; r < ALPHA; ++r) {
        float *d = dst + (ptrdiff_t)r * ld;
        const int yy = y0 + r;
        if (yy < 0 || yy >= H) {
            for (int c = 0; c < len; ++c) d[c] = 0.0f;
            continue;
        }
        const float *src = plane + (ptrdiff_t)yy * W + (x0 + c0);   /* column c0 */
        for (int c = 0; c < c0; ++c) d[c] = 0.0f;
        for (ptrdiff_t c = 0; c < c1 - c0; ++c) d[c0 + c] = src[c];   /* (a ptrdiff_t index: a copy, not a gather) */
        for (int c = c1; c < len; ++c) d[c] = 0.0f;
    }
}

/* a[r][c] = 0 for c >= from. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void zero_columns(float a[ALPHA][4 * LANES], int from)
{
    for (int r = 0; r < ALPHA; ++r)
        for (int c = from; c < 4 * LANES; ++c) a[r][c] = 0.0f;
}

/* V[xi][c][t - t0 + l] for the n <= LANES consecutive tiles t .. t + n of the block that starts
 * at tile t0 (nb tiles): one tile per lane, from any tile rows and images.
 *
 * Lane l's 6x6 inputs, row r, are read as columns 0-3 at src0[r][4 l ..] and 4-5 at src4[r][4 l ..]:
 * for LANES tiles of one tile row inside the image both are x's own rows (src4 = src0 + 4, the
 * tiles overlapping by 2 columns); otherwise a0 and a4 get copies, run by run, with zeros outside
 * the image. Deinterleaving them puts each column of the tiles in one vector of LANES. */
static void transform_inputs(const decaf_conv_geom *g, const float *x, int c, ptrdiff_t t0, ptrdiff_t t, int n,
                             float *V, ptrdiff_t nb)
{
    float a0[ALPHA][4 * LANES], a4[ALPHA][4 * LANES], ph[4][LANES];
    float d[ALPHA][ALPHA][LANES], tr[ALPHA][ALPHA][LANES], o[ALPHA][ALPHA][LANES];
    const float *src0[ALPHA], *src4[ALPHA];
    const ptrdiff_t plane = (ptrdiff_t)g->H * g->W, pos = (ptrdiff_t)g->C * nb;
    float *v = V + c * nb + (t - t0);
    const tile_run first = run_at(g, t, t, t + n);
    const int y0 = 4 * first.ti - g->pad_top, x0 = 4 * first.tj - g->pad_left;
    if (first.n == LANES && y0 >= 0 && y0 + ALPHA <= g->H && x0 >= 0 && x0 + 4 * LANES + 4 <= g->W) {
        const float *xc = x + ((ptrdiff_t)first.b * g->C + c) * plane;
        for (int r = 0; r < ALPHA; ++r) src0[r] = xc + (ptrdiff_t)(y0 + r) * g->W + x0, src4[r] = src0[r] + 4;
    } else {
        zero_columns(a0, 4 * n);   /* the lanes past n: zeros (computed, never stored) */
        zero_columns(a4, 4 * n);
        for (ptrdiff_t u = t, step; u < t + n; u += step) {
            const tile_run r = run_at(g, t, u, t + n);
            const float *xc = x + ((ptrdiff_t)r.b * g->C + c) * plane;
            const int yy = 4 * r.ti - g->pad_top, xx = 4 * r.tj - g->pad_left;
            copy_span(xc, g->H, g->W, yy, xx, 4 * r.n, &a0[0][4 * r.tl], 4 * LANES);
            copy_span(xc, g->H, g->W, yy, xx + 4, 4 * r.n, &a4[0][4 * r.tl], 4 * LANES);
            step = r.n;
        }
        for (int r = 0; r < ALPHA; ++r) src0[r] = a0[r], src4[r] = a4[r];
    }
    for (int r = 0; r < ALPHA; ++r) {   /* d[r][s][l] = column s of row r of tile l */
        deinterleave4(src0[r], &d[r][0]);
        deinterleave4(src4[r], ph);
        for (int l = 0; l < LANES; ++l) d[r][4][l] = ph[0][l], d[r][5][l] = ph[1][l];
    }
    for (int r = 0; r < ALPHA; ++r)   /* tr[r] = d[r] B: along each row */
        bt_1d(&tr[r][0][0], LANES, 1, &d[r][0][0], LANES, 1, LANES);
    /* o = B^T tr: down each column, all (j, l) of a row side by side; then its first n lanes into V
     * (a whole row as one fixed-size copy: a vector store; written as a loop, GCC made it 8-byte moves,
     * and the transform writing V itself, with a run-time stride, stayed scalar) */
    bt_1d(&o[0][0][0], ALPHA * LANES, 1, &tr[0][0][0], ALPHA * LANES, 1, ALPHA * LANES);
    const float *of = &o[0][0][0];   /* o[xi / 6][xi % 6][l] = of[xi LANES + l] */
    if (n == LANES) {
        for (int q = 0; q < POS; ++q) memcpy(v + q * pos, of + q * LANES, sizeof(float) * LANES);
    } else {
        for (int q = 0; q < POS; ++q)
            for (int l = 0; l < n; ++l) v[q * pos + l] = of[q * LANES + l];
    }
}

/* The number of tiles of the group that starts at tile t (< t1, the end of the block): LANES, or
 * fewer at the end of the block; and when a tile row has LANES tiles or more, at most the rest of
 * the row (so that most groups are one row's tiles, transformed in place in x and y, and only
 * those at the image's edges are copied). Narrower images fill the lanes from several rows. */
static int group_size(const decaf_conv_geom *g, ptrdiff_t t, ptrdiff_t t1)
{
    ptrdiff_t n = t1 - t < LANES ? t1 - t : LANES;
    const int tw = tiles_w(g);
    if (tw >= LANES && tw - t % tw < n)
        n = tw - t % tw;
    return (int)n;
}

/* Input channel c of the block's tiles t0 .. t1 into V (POS, C, t1 - t0), a group at a time. */
static void input_channel(const decaf_conv_geom *g, const float *x, int c, ptrdiff_t t0, ptrdiff_t t1, float *V)
{
    for (ptrdiff_t t = t0, n; t < t1; t += n) {
        n = group_size(g, t, t1);
        transform_inputs(g, x, c, t0, t, (int)n, V, t1 - t0);
    }
}

/* ---- the output transform: y tile = A^T M A --------------------------------------------------- */

/* The 1-D output transform of `count` vectors: vector l has m_r = m[r is + l ml] (r < 6) and gets
 * o[i os + l ol] = (A^T m)_i (i < 4). */
static inline void at_1d(float *restrict o, ptrdiff_t os, ptrdiff_t ol, const float *restrict m, ptrdiff_t is,
                         ptrdiff_t ml, int count)
{
    for (int l = 0; l < count; ++l) {
        const float *p = m + l * ml;
        const float m0 = p[0], m1 = p[is], m2 = p[2 * is], m3 = p[3 * is], m4 = p[4 * is], m5 = p[5 * is];
        const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
        float *q = o + l * ol;
        q[0] = m0 + a + c;
        q[os] = b + 2.0f * d;
        q[2 * os] = a + 4.0f * c;
        q[3 * os] = b + 8.0f * d + m5;
    }
}

/* Output channel k of the n <= LANES consecutive tiles t .. t + n of the block that starts at
 * tile t0 (nb tiles), from M (POS, K, nb), into y; then the bias (bk) and the epilogue on the
 * row pieces written. LANES tiles of one tile row inside the image are interleaved straight into
 * y's rows; otherwise through o, copied run by run. */
static void transform_outputs(const decaf_conv_geom *g, const float *M, int k, ptrdiff_t t0, ptrdiff_t t, int n,
                              ptrdiff_t nb, float *y, float bk, const decaf_epilogue *ep)
{
    float tr[4][ALPHA][LANES], q4[4][LANES], o[4][4 * LANES];
    const ptrdiff_t pos = (ptrdiff_t)g->K * nb, plane = (ptrdiff_t)g->Ho * g->Wo;
    const float *m_ = M + k * nb + (t - t0);
    /* tr = A^T M: down each column j, from M itself. With n < LANES the lanes past n read M's next
     * values (other tiles, or the next row; the LANES floats after M are zeros: see
     * decaf_winograd_forward): computed, never stored. */
    for (int j = 0; j < ALPHA; ++j)
        at_1d(&tr[0][j][0], ALPHA * LANES, 1, m_ + j * pos, ALPHA * pos, 1, LANES);
    const tile_run first = run_at(g, t, t, t + n);
    const int whole = first.n == LANES && 4 * first.ti + 4 <= g->Ho && 4 * first.tj + 4 * LANES <= g->Wo;
    float *y0 = y + ((ptrdiff_t)first.b * g->K + k) * plane + (ptrdiff_t)4 * first.ti * g->Wo + 4 * first.tj;
    for (int i = 0; i < 4; ++i) {   /* output row i of the tiles: [4 l + j] = (tr[i][.][l] A)_j */
        at_1d(&q4[0][0], LANES, 1, &tr[i][0][0], LANES, 1, LANES);
        interleave4(q4, whole ? y0 + (ptrdiff_t)i * g->Wo : o[i]);
    }
    for (ptrdiff_t u = t, step; u < t + n; u += step) {   /* each run: copy (unless whole), epilogue */
        const tile_run r = run_at(g, t, u, t + n);
        const int oy = 4 * r.ti, ox = 4 * r.tj;
        const int rows = g->Ho - oy < 4 ? g->Ho - oy : 4, cols = g->Wo - ox < 4 * r.n ? g->Wo - ox : 4 * r.n;
        const ptrdiff_t at = ((ptrdiff_t)r.b * g->K + k) * plane + (ptrdiff_t)oy * g->Wo + ox;
        for (int i = 0; i < rows; ++i) {
            if (!whole)
                for (int c = 0; c < cols; ++c) y[at + (ptrdiff_t)i * g->Wo + c] = o[i][4 * r.tl + c];
            decaf_epilogue_at(ep, y, at + (ptrdiff_t)i * g->Wo, cols, bk);
        }
        step = r.n;
    }
}

/* Output channel k of the block's tiles t0 .. t1 from M (POS, K, t1 - t0) into y, a group at a
 * time. */
static void output_channel(const decaf_conv_geom *g, const float *M, int k, ptrdiff_t t0, ptrdiff_t t1,
                           const float *bias, float *y, const decaf_epilogue *ep)
{
    const float bk = bias ? bias[k] : 0.0f;
    for (ptrdiff_t t = t0, n; t < t1; t += n) {
        n = group_size(g, t, t1);
        transform_outputs(g, M, k, t0, t, (int)n, t1 - t0, y, bk, ep);
    }
}

/* ---- the forward -------------------------------------------------------------------------------- */

/* The tiles t0 .. t1 in blocks of at most nb tiles, all on the calling thread. */
static void tiles_serial(const decaf_conv_geom *g, const float *x, const float *u, const float *bias, float *y,
                         float *V, float *M, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t nb, const decaf_epilogue *ep)
{
    const int C = g->C, K = g->K;
    const ptrdiff_t blocks = (t1 - t0 + nb - 1) / nb;
    for (ptrdiff_t bi = 0; bi < blocks; ++bi) {
        const ptrdiff_t b0 = t0 + (t1 - t0) * bi / blocks, b1 = t0 + (t1 - t0) * (bi + 1) / blocks, n = b1 - b0;
        for (int c = 0; c < C; ++c)
            input_channel(g, x, c, b0, b1, V);
        for (int q = 0; q < POS; ++q)
            decaf_sgemm_serial(0, 0, K, (int)n, C, 1.0f, u + (ptrdiff_t)q * K * C, C, V + q * C * n, (int)n, 0.0f,
                               M + q * K * n, (int)n);
        for (int k = 0; k < K; ++k)
            output_channel(g, M, k, b0, b1, bias, y, ep);
    }
}

/* All tiles in blocks shared by the team: each phase split over the threads (the team's barrier
 * after each). */
static void tiles_shared(const decaf_conv_geom *g, const float *x, const float *u, const float *bias, float *y,
                         float *V, float *M, ptrdiff_t nb, const decaf_epilogue *ep)
{
    const int C = g->C, K = g->K;
    const ptrdiff_t tiles = tile_count(g), blocks = (tiles + nb - 1) / nb;
    for (ptrdiff_t bi = 0; bi < blocks; ++bi) {
        /* blocks of even sizes (<= nb) */
        const ptrdiff_t t0 = tiles * bi / blocks, t1 = tiles * (bi + 1) / blocks, n = t1 - t0;
        #pragma omp for schedule(static)
        for (int c = 0; c < C; ++c)
            input_channel(g, x, c, t0, t1, V);
        #pragma omp for schedule(static)
        for (int q = 0; q < POS; ++q)
            decaf_sgemm_serial(0, 0, K, (int)n, C, 1.0f, u + (ptrdiff_t)q * K * C, C, V + q * C * n, (int)n, 0.0f,
                               M + q * K * n, (int)n);
        #pragma omp for schedule(static)
        for (int k = 0; k < K; ++k)
            output_channel(g, M, k, t0, t1, bias, y, ep);
    }
}

void decaf_winograd_forward(const decaf_conv_geom *g, int threads, const float *x, const float *u,
                            const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const int nt = threads < 1 ? 1 : threads, own = by_tiles(g, nt);
    const ptrdiff_t tiles = tile_count(g), nb = block_tiles(g), slot = block_floats(g);
    const ptrdiff_t v_size = (ptrdiff_t)POS * g->C * nb;   /* a slot: V, then M */
    const ptrdiff_t slots = own ? nt : 1;
    for (ptrdiff_t i = 0; i < slots; ++i)   /* the floats after each slot's M: zeros */
        for (int l = 0; l < LANES; ++l) work[(i + 1) * slot - LANES + l] = 0.0f;
    decaf_blas_single_threaded();
    if (nt == 1) {
        tiles_serial(g, x, u, bias, y, work, work + v_size, 0, tiles, nb, ep);
        return;
    }
    #pragma omp parallel num_threads(nt)
    {
        if (own) {   /* a contiguous range of tiles per thread, in its own slot */
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *V = work + t * slot;
            tiles_serial(g, x, u, bias, y, V, V + v_size, tiles * t / T, tiles * (t + 1) / T, nb, ep);
        } else {
            tiles_shared(g, x, u, bias, y, work, work + v_size, nb, ep);
        }
    }
}

/* ---- the weight gradient ------------------------------------------------------------------------ */

/* From the forward, tile by tile: Y[k] = A^T M[k] A with M[k] = sum_c U[k, c] * V[c] (elementwise
 * on the 6x6) and U[k, c] = G w[k, c] G^T. Backwards, for the output gradient dY[k] of a tile (4x4,
 * zeros past Ho and Wo: the partial tiles' extra outputs were never part of y):
 *     dM[k] = A dY[k] A^T                     (6x6; A = (A^T)^T, see the top)
 *     dU[k, c] = sum over all tiles of dM[k] * V[c]
 *     dw[k, c] = G^T dU[k, c] G               (3x3)
 * Per position xi the sum over tiles is a GEMM, dU[xi] (K, C) += D[xi] (K, tiles) V[xi]^T (tiles,
 * C), with D = dM laid out like M: 36 multiply-adds per tile and (k, c) pair, where im2col + GEMM
 * does 16 * 9. The tiles go in blocks (block_tiles, as the forward); the threads share each block:
 * the input transform split by input channels, dy's by output channels, the GEMMs by positions (a
 * thread owns its positions of dU: one dU in all, no partial sums to add up). */

#ifndef GRAD_BLOCK_BYTES
#define GRAD_BLOCK_BYTES 524288
#endif

/* o[a ol] = (A d)_a for the 4 values d[s is] (s < 4), a < 6: A's rows are (1 0 0 0), (1 1 1 1),
 * (1 -1 1 -1), (1 2 4 8), (1 -2 4 -8), (0 0 0 1). */
static inline void a_1d(float *restrict o, ptrdiff_t ol, const float *restrict d, ptrdiff_t is)
{
    const float d0 = d[0], d1 = d[is], d2 = d[2 * is], d3 = d[3 * is];
    const float even = d0 + d2, odd = d1 + d3, even4 = d0 + 4.0f * d2, odd2 = 2.0f * d1 + 8.0f * d3;
    o[0] = d0;
    o[ol] = even + odd;
    o[2 * ol] = even - odd;
    o[3 * ol] = even4 + odd2;
    o[4 * ol] = even4 - odd2;
    o[5 * ol] = d3;
}

/* Output channel k of the block's tiles t0 .. t1 into D (POS, K, t1 - t0): D[xi][k][t - t0] =
 * (A dY A^T)[xi] for tile t's dY. LANES tiles at a time, the tiles innermost (vector loops). */
static void gradient_channel(const decaf_conv_geom *g, const float *dy, int k, ptrdiff_t t0, ptrdiff_t t1, float *D)
{
    const ptrdiff_t nb = t1 - t0, pos = (ptrdiff_t)g->K * nb, plane = (ptrdiff_t)g->Ho * g->Wo;
    const int tw = tiles_w(g), th = tiles_h(g);
    float d[4][4][LANES], tr[4][ALPHA][LANES], o[ALPHA][ALPHA][LANES];
    for (ptrdiff_t t = t0; t < t1; t += LANES) {
        const int n = t1 - t < LANES ? (int)(t1 - t) : LANES;
        for (int l = 0; l < LANES; ++l) {   /* gather: d[r][s][l] = dY of tile t + l (zeros past n) */
            const ptrdiff_t u = t + l;
            if (l >= n) {
                for (int r = 0; r < 4; ++r)
                    for (int s = 0; s < 4; ++s) d[r][s][l] = 0.0f;
                continue;
            }
            const int b = (int)(u / ((ptrdiff_t)th * tw)), oy = 4 * (int)(u / tw % th), ox = 4 * (int)(u % tw);
            const float *src = dy + ((ptrdiff_t)b * g->K + k) * plane + (ptrdiff_t)oy * g->Wo + ox;
            const int rows = g->Ho - oy < 4 ? g->Ho - oy : 4, cols = g->Wo - ox < 4 ? g->Wo - ox : 4;
            for (int r = 0; r < 4; ++r)
                for (int s = 0; s < 4; ++s) d[r][s][l] = r < rows && s < cols ? src[(ptrdiff_t)r * g->Wo + s] : 0.0f;
        }
        for (int r = 0; r < 4; ++r)   /* tr[r] = A applied along row r */
            for (int l = 0; l < LANES; ++l) a_1d(&tr[r][0][l], LANES, &d[r][0][l], LANES);
        for (int j = 0; j < ALPHA; ++j)   /* o[.][j] = A applied down column j */
            for (int l = 0; l < LANES; ++l) a_1d(&o[0][j][l], ALPHA * LANES, &tr[0][j][l], ALPHA * LANES);
        float *dst = D + (ptrdiff_t)k * nb + (t - t0);
        for (int q = 0; q < POS; ++q)
            for (int l = 0; l < n; ++l) dst[q * pos + l] = o[q / ALPHA][q % ALPHA][l];
    }
}

/* Tiles per block of the weight gradient: more than the forward's (block_tiles), since every block
 * reads and writes all of dU (36 K C floats) once: a position's slices of V and D about 512 KB
 * together, at least 64 and at most 2048 tiles, a multiple of LANES. */
static ptrdiff_t grad_block_tiles(const decaf_conv_geom *g)
{
    ptrdiff_t n = GRAD_BLOCK_BYTES / 4 / ((ptrdiff_t)g->C + g->K) / LANES * LANES;
    n = n < 64 ? 64 : n > 2048 ? 2048 : n;
    const ptrdiff_t tiles = tile_count(g);
    return tiles < n ? tiles : n;
}

/* floats of one block's V and D */
static ptrdiff_t grad_block_floats(const decaf_conv_geom *g)
{
    return (ptrdiff_t)POS * ((ptrdiff_t)g->C + g->K) * grad_block_tiles(g) + LANES;
}

ptrdiff_t decaf_winograd_weight_grad_work_size(const decaf_conv_geom *g)
{
    return (ptrdiff_t)POS * g->K * g->C + grad_block_floats(g);
}

/* o (3) = G^T u for the 6 values u (in double), G as at the top. */
static void gt_times(const double u[ALPHA], ptrdiff_t is, double o[3])
{
    const double sixth = 1.0 / 6.0, f24th = 1.0 / 24.0, f12th = 1.0 / 12.0;
    const double u0 = u[0], u1 = u[is], u2 = u[2 * is], u3 = u[3 * is], u4 = u[4 * is], u5 = u[5 * is];
    o[0] = u0 * 0.25 - (u1 + u2) * sixth + (u3 + u4) * f24th;
    o[1] = (u2 - u1) * sixth + (u3 - u4) * f12th;
    o[2] = (u3 + u4 - u1 - u2) * sixth + u5;
}

/* dw[k, c] = G^T dU[k, c] G for every filter, chunk by chunk (dU's positions are K C floats apart:
 * read a chunk's 36 runs, as decaf_winograd_pack writes them). */
static void gradient_filters(const decaf_conv_geom *g, const float *dU, float *dw)
{
    const ptrdiff_t kc = (ptrdiff_t)g->K * g->C, chunks = (kc + PACK_CHUNK - 1) / PACK_CHUNK;
    #pragma omp for schedule(static)
    for (ptrdiff_t ci = 0; ci < chunks; ++ci) {
        const ptrdiff_t i0 = ci * PACK_CHUNK, n = kc - i0 < PACK_CHUNK ? kc - i0 : PACK_CHUNK;
        double u[PACK_CHUNK][POS], cols[3][ALPHA], o[3];
        for (int q = 0; q < POS; ++q)
            for (ptrdiff_t l = 0; l < n; ++l) u[l][q] = dU[q * kc + i0 + l];
        for (ptrdiff_t l = 0; l < n; ++l) {
            for (int a = 0; a < ALPHA; ++a) {   /* cols[s][a] = (row a of dU) G, entry s */
                gt_times(u[l] + a * ALPHA, 1, o);
                cols[0][a] = o[0], cols[1][a] = o[1], cols[2][a] = o[2];
            }
            for (int s = 0; s < 3; ++s) {   /* column s of G^T (dU G) */
                gt_times(cols[s], 1, o);
                for (int r = 0; r < 3; ++r) dw[(i0 + l) * 9 + r * 3 + s] = (float)o[r];
            }
        }
    }
}

void decaf_winograd_weight_grad(const decaf_conv_geom *g, int threads, const float *x, const float *dy, float *dw,
                                float *db, float *work)
{
    const int nt = threads < 1 ? 1 : threads, C = g->C, K = g->K;
    const ptrdiff_t tiles = tile_count(g), nb = grad_block_tiles(g), blocks = (tiles + nb - 1) / nb;
    const ptrdiff_t kc = (ptrdiff_t)K * C, plane = (ptrdiff_t)g->Ho * g->Wo;
    float *dU = work, *V = work + POS * kc, *D = V + (ptrdiff_t)POS * C * nb;
    decaf_blas_single_threaded();
    #pragma omp parallel num_threads(nt)
    {
        #pragma omp for schedule(static)
        for (ptrdiff_t i = 0; i < POS * kc; ++i) dU[i] = 0.0f;
        if (db) {
            #pragma omp for schedule(static)
            for (int k = 0; k < K; ++k) {
                double s = 0.0;
                for (int b = 0; b < g->B; ++b) {
                    const float *p = dy + ((ptrdiff_t)b * K + k) * plane;
                    float part = 0.0f;
                    for (ptrdiff_t i = 0; i < plane; ++i) part += p[i];
                    s += part;
                }
                db[k] = (float)s;
            }
        }
        for (ptrdiff_t bi = 0; bi < blocks; ++bi) {
            const ptrdiff_t t0 = tiles * bi / blocks, t1 = tiles * (bi + 1) / blocks, n = t1 - t0;
            #pragma omp for schedule(static)
            for (int c = 0; c < C; ++c)
                input_channel(g, x, c, t0, t1, V);
            #pragma omp for schedule(static)
            for (int k = 0; k < K; ++k)
                gradient_channel(g, dy, k, t0, t1, D);
            #pragma omp for schedule(static)
            for (int q = 0; q < POS; ++q)
                decaf_sgemm_serial(0, 1, K, C, (int)n, 1.0f, D + q * K * n, (int)n, V + q * C * n, (int)n, 1.0f,
                                   dU + q * kc, C);
        }
        gradient_filters(g, dU, dw);
    }
}

/* ---- when to use it ----------------------------------------------------------------------------- */

/* Winograd pays when the GEMMs, 4x fewer multiply-adds than the direct convolution, outweigh the
 * transforms, which cost per input and output value: C K / (C + K), the GEMMs' multiply-adds per
 * transformed value (per tile and position), must be large enough. And the GEMMs need enough
 * tiles: U is 4x the weights (36 instead of 9 values per filter), read once per block, so with a
 * handful of tiles they are bound by reading U.
 *
 * Measured with benchmarks/bench_winograd.py on an AMD EPYC Zen 3 (family 25, model 1; AVX2
 * variant; a machine shared with other jobs, so two runs each: benchmarks/results_winograd_2026-12-07.json).
 * Speedup = conv_forward's time (the direct AVX2 kernel for all of these) / Winograd's, with a ReLU
 * epilogue, pads 1, 2 threads:
 *     layer (C -> K at HxW)   C K/(C+K)  batch 1: tiles  speedup     batch 16: tiles  speedup
 *     64 -> 64 at 56x56          32            196   1.19-1.47           3136   1.19-1.34
 *     128 -> 128 at 28x28        64             49   1.23-1.67            784   1.36-1.91
 *     256 -> 256 at 14x14       128             16   1.11-1.30            256   1.71-1.78
 *     512 -> 512 at 7x7         256              4   0.83-0.88             64   2.29-2.48
 *     64 -> 64 at 224x224        32           3136   1.38-1.45          50176   1.10-1.35
 *     128 -> 128 at 112x112      64            784   1.49-1.93          12544   1.83-1.87
 *     256 -> 256 at 56x56       128            196   2.02-2.11           3136   1.68-1.82
 *     512 -> 512 at 28x28       256             49   1.97-2.20            784   2.16-2.25
 *     512 -> 512 at 14x14       256             16   1.63-1.72            256   1.84-2.05
 *     128 -> 32 at 56x56         25.6          196   1.12-1.17           3136   0.99-1.06
 *     128 -> 32 at 28x28         25.6           49   1.09-1.19            784   1.04-1.18
 *     128 -> 32 at 14x14         25.6           16   0.85-0.86            256   0.62-0.66
 *     128 -> 32 at 7x7           25.6            4   0.59-0.64             64   0.63-0.77
 * With 1 thread the same picture (ResNet's layers 1.26-2.24 except 512 -> 512 at 7x7, batch 1:
 * 0.81; DenseNet's 0.54-1.21), so the thread count does not enter the rule: C K / (C + K) >= 32
 * and at least 16 tiles. It leaves out DenseNet's 128 -> 32 layers, a tie at 56x56 and 28x28 and a
 * loss below. Against main's later direct kernel with prepacked weights (f6a15d8, one run per batch
 * size) the same picture: 1.02-2.35x on the layers the rule picks (the least 256 -> 256 at 14x14,
 * batch 1, 16 tiles), 0.58 for 512 -> 512 at 7x7, batch 1; DenseNet's 0.73-1.17. (Only measured on
 * Zen 3 with AVX2: the AVX-512 direct kernel is faster, and may move the line; rerun the benchmark
 * there.) */
int decaf_winograd_preferred(const decaf_conv_geom *g, int threads)
{
    (void)threads;
    if (!decaf_winograd_supported(g))
        return 0;
    const double per_value = (double)g->C * g->K / ((double)g->C + g->K);
    return per_value >= 32.0 && tile_count(g) >= 16;
}
