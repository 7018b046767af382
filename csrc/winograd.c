#include "winograd.h"

#include <stddef.h>

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
 * which is where the time goes: 36 (4 + 2)^2 / (16 * 9) = 2.25x fewer multiply-adds than the
 * direct convolution, since every product stands for 4x4 outputs instead of 1.
 *
 * The tiles: output tile (ti, tj) of an image covers outputs rows 4 ti .. 4 ti + 3, columns 4 tj ..
 * 4 tj + 3 (clipped to Ho, Wo), and reads inputs rows 4 ti - pad_top .. + 5, columns 4 tj -
 * pad_left .. + 5, zeros outside the image (the padding, and the partial tiles' overhang). All
 * images share one tile space: tile t = (b th + ti) tw + tj, with th = ceil(Ho / 4), tw =
 * ceil(Wo / 4) tiles per column and per row of an image.
 *
 * The forward runs through the tiles in blocks of at most block_tiles() tiles, each block in three
 * phases split over the threads (in one parallel region; a barrier ends each phase):
 *   1. input transform, by input channels:    V[xi][c][t]  (t the tile's index in the block)
 *   2. 36 GEMMs, by positions:                 M[xi] = U[xi] V[xi]   (decaf_sgemm_serial)
 *   3. output transform, by output channels:  y, then the bias and epilogue on the rows written.
 * The transforms run on LANES tiles at once (consecutive tiles of one tile row of an image), with
 * the tiles innermost, so that the loops of the transform are vector operations across tiles. */

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
 * GEMM's operands besides U stay in L2; at least 32 and at most 256 tiles, a multiple of LANES. */
static ptrdiff_t block_tiles(const decaf_conv_geom *g)
{
    ptrdiff_t n = 32768 / ((ptrdiff_t)g->C + g->K) / LANES * LANES;
    n = n < 32 ? 32 : n > 256 ? 256 : n;
    const ptrdiff_t tiles = tile_count(g);
    return tiles < n ? tiles : n;
}

ptrdiff_t decaf_winograd_packed_size(const decaf_conv_geom *g)
{
    return (ptrdiff_t)POS * g->K * g->C;
}

ptrdiff_t decaf_winograd_work_size(const decaf_conv_geom *g, int threads)
{
    (void)threads;   /* the threads share one block's V and M */
    return (ptrdiff_t)POS * ((ptrdiff_t)g->C + g->K) * block_tiles(g);
}

/* ---- the weight transform: U[xi][k][c] = (G w[k, c] G^T)[xi] ----------------------------------- */

/* o = G f for a 3-vector f (in double: U is rounded once, to float, at the end). */
static void g_times(const double f[3], double o[ALPHA])
{
    o[0] = f[0] / 4.0;
    o[1] = -(f[0] + f[1] + f[2]) / 6.0;
    o[2] = -(f[0] - f[1] + f[2]) / 6.0;
    o[3] = (f[0] + 2.0 * f[1] + 4.0 * f[2]) / 24.0;
    o[4] = (f[0] - 2.0 * f[1] + 4.0 * f[2]) / 24.0;
    o[5] = f[2];
}

void decaf_winograd_pack(const decaf_conv_geom *g, const float *w, float *u)
{
    const ptrdiff_t kc = (ptrdiff_t)g->K * g->C;   /* filter i = k C + c; U[xi] is (K, C), row-major */
    for (ptrdiff_t i = 0; i < kc; ++i) {
        const float *f = w + i * 9;
        double cols[ALPHA][3], col[3], row[3], out[ALPHA];
        for (int s = 0; s < 3; ++s) {   /* cols[.][s] = G f[:, s] */
            col[0] = f[s], col[1] = f[3 + s], col[2] = f[6 + s];
            g_times(col, out);
            for (int a = 0; a < ALPHA; ++a) cols[a][s] = out[a];
        }
        for (int a = 0; a < ALPHA; ++a) {   /* row a of G f G^T */
            row[0] = cols[a][0], row[1] = cols[a][1], row[2] = cols[a][2];
            g_times(row, out);
            for (int b = 0; b < ALPHA; ++b) u[(ptrdiff_t)(a * ALPHA + b) * kc + i] = (float)out[b];
        }
    }
}

/* ---- the input transform: V[xi][c][t] = (B^T d B)[xi] ------------------------------------------ */

/* o[i os + l] = (B^T d)_i for d_r = d[r is + l], l < LANES (one 1-D transform per lane). */
static inline void bt_lanes(float *restrict o, ptrdiff_t os, const float *restrict d, ptrdiff_t is)
{
    for (int l = 0; l < LANES; ++l) {
        const float d0 = d[l], d1 = d[is + l], d2 = d[2 * is + l], d3 = d[3 * is + l], d4 = d[4 * is + l],
                    d5 = d[5 * is + l];
        o[l] = 4.0f * d0 - 5.0f * d2 + d4;
        o[os + l] = -4.0f * (d1 + d2) + (d3 + d4);
        o[2 * os + l] = 4.0f * (d1 - d2) + (d4 - d3);
        o[3 * os + l] = 2.0f * (d3 - d1) + (d4 - d2);
        o[4 * os + l] = 2.0f * (d1 - d3) + (d4 - d2);
        o[5 * os + l] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* d[r][s][l] = x[y0 + r][x0 + 4 l + s] of the plane (H, W), zero outside it and for lanes l >= n:
 * the 6x6 inputs of n tiles side by side, the first one's top left corner at (y0, x0). */
static void gather_inputs(const float *plane, int H, int W, int y0, int x0, int n, float d[ALPHA][ALPHA][LANES])
{
    const int inside = y0 >= 0 && y0 + ALPHA <= H && x0 >= 0 && x0 + 4 * (n - 1) + ALPHA <= W;
    for (int r = 0; r < ALPHA; ++r) {
        const int yy = y0 + r;
        const float *row = plane + (ptrdiff_t)yy * W;
        for (int s = 0; s < ALPHA; ++s)
            for (int l = 0; l < LANES; ++l) {
                const int xx = x0 + 4 * l + s;
                d[r][s][l] = l < n && (inside || (yy >= 0 && yy < H && xx >= 0 && xx < W)) ? row[xx] : 0.0f;
            }
    }
}

/* V[xi][c][tl .. tl + n) for n <= LANES tiles of one tile row: image plane (channel c of one
 * image), inputs from (y0, x0); V's rows are ld floats apart, its positions pos apart. */
static void transform_inputs(const float *plane, int H, int W, int y0, int x0, int n, float *v, ptrdiff_t pos)
{
    float d[ALPHA][ALPHA][LANES], t[ALPHA][ALPHA][LANES], o[ALPHA][ALPHA][LANES];
    gather_inputs(plane, H, W, y0, x0, n, d);
    for (int s = 0; s < ALPHA; ++s)   /* t = B^T d: down each column s */
        bt_lanes(&t[0][s][0], ALPHA * LANES, &d[0][s][0], ALPHA * LANES);
    for (int i = 0; i < ALPHA; ++i)   /* o = t B: along each row i */
        bt_lanes(&o[i][0][0], LANES, &t[i][0][0], LANES);
    for (int i = 0; i < ALPHA; ++i)
        for (int j = 0; j < ALPHA; ++j)
            for (int l = 0; l < n; ++l) v[(i * ALPHA + j) * pos + l] = o[i][j][l];
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

/* Input channel c of the block's tiles t0 .. t1 into V (POS, C, n). */
static void input_channel(const decaf_conv_geom *g, const float *x, int c, ptrdiff_t t0, ptrdiff_t t1, float *V)
{
    const ptrdiff_t nb = t1 - t0, pos = (ptrdiff_t)g->C * nb, plane = (ptrdiff_t)g->H * g->W;
    for (ptrdiff_t t = t0, step; t < t1; t += step) {
        const tile_run r = run_at(g, t0, t, t1);
        const float *xc = x + ((ptrdiff_t)r.b * g->C + c) * plane;
        for (int l = 0; l < r.n; l += LANES)
            transform_inputs(xc, g->H, g->W, 4 * r.ti - g->pad_top, 4 * (r.tj + l) - g->pad_left,
                             r.n - l < LANES ? r.n - l : LANES, V + c * nb + r.tl + l, pos);
        step = r.n;
    }
}

/* ---- the output transform: y tile = A^T M A --------------------------------------------------- */

/* o[i os + l] = (A^T m)_i for m_r = m[r is + l], l < LANES. */
static inline void at_lanes(float *restrict o, ptrdiff_t os, const float *restrict m, ptrdiff_t is)
{
    for (int l = 0; l < LANES; ++l) {
        const float m0 = m[l], m1 = m[is + l], m2 = m[2 * is + l], m3 = m[3 * is + l], m4 = m[4 * is + l],
                    m5 = m[5 * is + l];
        const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
        o[l] = m0 + a + c;
        o[os + l] = b + 2.0f * d;
        o[2 * os + l] = a + 4.0f * c;
        o[3 * os + l] = b + 8.0f * d + m5;
    }
}

/* Output tiles from M[xi][tl .. tl + n) (positions pos apart) into the plane (Ho, Wo) of y, the
 * first tile's top left output at (y0, x0), the next ones 4 columns further each. */
static void transform_outputs(const float *m_, ptrdiff_t pos, int n, float *plane, int Ho, int Wo, int y0, int x0)
{
    float m[ALPHA][ALPHA][LANES], t[4][ALPHA][LANES], o[4][4][LANES];
    for (int i = 0; i < ALPHA; ++i)
        for (int j = 0; j < ALPHA; ++j)
            for (int l = 0; l < LANES; ++l) m[i][j][l] = l < n ? m_[(i * ALPHA + j) * pos + l] : 0.0f;
    for (int j = 0; j < ALPHA; ++j)   /* t = A^T m: down each column j */
        at_lanes(&t[0][j][0], ALPHA * LANES, &m[0][j][0], ALPHA * LANES);
    for (int i = 0; i < 4; ++i)       /* o = t A: along each row i */
        at_lanes(&o[i][0][0], LANES, &t[i][0][0], LANES);
    const int rows = Ho - y0 < 4 ? Ho - y0 : 4;
    for (int i = 0; i < rows; ++i) {
        float *row = plane + (ptrdiff_t)(y0 + i) * Wo;
        for (int l = 0; l < n; ++l)
            for (int j = 0; j < 4; ++j)
                if (x0 + 4 * l + j < Wo) row[x0 + 4 * l + j] = o[i][j][l];
    }
}

/* Output channel k of the block's tiles t0 .. t1 from M (POS, K, n) into y, then the bias and
 * the epilogue on each row piece written. */
static void output_channel(const decaf_conv_geom *g, const float *M, int k, ptrdiff_t t0, ptrdiff_t t1,
                           const float *bias, float *y, const decaf_epilogue *ep)
{
    const ptrdiff_t nb = t1 - t0, pos = (ptrdiff_t)g->K * nb, plane = (ptrdiff_t)g->Ho * g->Wo;
    const float bk = bias ? bias[k] : 0.0f;
    for (ptrdiff_t t = t0, step; t < t1; t += step) {
        const tile_run r = run_at(g, t0, t, t1);
        const ptrdiff_t at = ((ptrdiff_t)r.b * g->K + k) * plane;   /* plane (b, k) of y */
        for (int l = 0; l < r.n; l += LANES)
            transform_outputs(M + k * nb + r.tl + l, pos, r.n - l < LANES ? r.n - l : LANES, y + at, g->Ho,
                              g->Wo, 4 * r.ti, 4 * (r.tj + l));
        const int x0 = 4 * r.tj, x1 = 4 * (r.tj + r.n) < g->Wo ? 4 * (r.tj + r.n) : g->Wo;
        for (int oy = 4 * r.ti; oy < 4 * r.ti + 4 && oy < g->Ho; ++oy)
            decaf_epilogue_at(ep, y, at + (ptrdiff_t)oy * g->Wo + x0, x1 - x0, bk);
        step = r.n;
    }
}

/* ---- the forward -------------------------------------------------------------------------------- */

void decaf_winograd_forward(const decaf_conv_geom *g, int threads, const float *x, const float *u,
                            const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const int nt = threads < 1 ? 1 : threads, C = g->C, K = g->K;
    const ptrdiff_t tiles = tile_count(g), nb_max = block_tiles(g);
    const ptrdiff_t blocks = (tiles + nb_max - 1) / nb_max;
    float *V = work, *M = work + (ptrdiff_t)POS * C * nb_max;
    decaf_blas_single_threaded();
    #pragma omp parallel num_threads(nt)
    {
        for (ptrdiff_t bi = 0; bi < blocks; ++bi) {
            /* blocks of even sizes (<= nb_max) */
            const ptrdiff_t t0 = tiles * bi / blocks, t1 = tiles * (bi + 1) / blocks, nb = t1 - t0;
            #pragma omp for schedule(static)
            for (int c = 0; c < C; ++c)
                input_channel(g, x, c, t0, t1, V);
            #pragma omp for schedule(static)
            for (int q = 0; q < POS; ++q)
                decaf_sgemm_serial(0, 0, K, (int)nb, C, 1.0f, u + (ptrdiff_t)q * K * C, C, V + q * C * nb, (int)nb,
                                   0.0f, M + q * K * nb, (int)nb);
            #pragma omp for schedule(static)
            for (int k = 0; k < K; ++k)
                output_channel(g, M, k, t0, t1, bias, y, ep);
        }
    }
}

/* ---- when to use it ----------------------------------------------------------------------------- */

int decaf_winograd_preferred(const decaf_conv_geom *g, int threads)
{
    (void)threads;
    (void)g;
    return 0;   /* not measured yet */
}
