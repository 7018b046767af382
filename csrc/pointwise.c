#include "pointwise.h"

#include <stddef.h>
#include <stdint.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PW_SIMD 1
#endif

#include "activation.h"
#include "threads.h"

/* How it works. Per image, y (K, P) = w (K, C) x (C, P): the planes of x are the rows of a C x P
 * matrix and those of y the rows of K x P, so a run of pixels of one channel is contiguous in both.
 *
 * The weights are packed (once per call, or once for all by the caller) in blocks of 6 output
 * channels, wp[kb][c][r] = w[6 kb + r][c], the last block zero-padded: the 6 weights of one input
 * channel are consecutive floats.
 *
 * The register tile (AVX2 + FMA) is 6 output channels x 16 pixels: 12 accumulators of 8 lanes,
 * started at the bias; per input channel c, 2 loads of x[c][p .. p + 16), 6 broadcasts of the
 * block's weights, 12 FMAs; then 6 x 2 stores into the rows of y. Fewer than 16 pixels left: a tile
 * of 8 (6 accumulators), then one of up to 7 with masked loads and stores. A short last block
 * computes 6 channels (zero weights) and stores its real ones only.
 *
 * The work is cut in tasks (image, band of pixels, range of channel blocks). A band is sized so
 * that its x (C x band floats) stays in the L2 cache while every channel block of the task runs
 * over it: inside a task, channel blocks outside, 16-pixel tiles inside. Once a block has run
 * over the whole band, its channels' segments of the band get the epilogue (residual, activation),
 * while they are still in cache; a residual and a clamp (ReLU, ReLU6) are applied in the registers
 * instead, and an output larger than the last-level cache is then written with streaming stores (no read
 * of each line before it is written; MobileNet's expansions at 112x112 and batch 16, 51-77 MB of
 * output, about 1.1x alone, MobileNetV2 / V3 at batch 16 1.03-1.05x). At batch 1 a small image gets its channel blocks split over
 * several tasks too, so that every thread has work (MobileNet's 7x7 layers: 49 pixels).
 *
 * The AVX-512 variant (built with -mavx2 -mfma too) compiles the same 8-lane code. The generic
 * variant computes the same tasks with plain loops (GCC vectorises them for SSE2). */

enum { PW_R = 6 };                         /* output channels per block */

/* x of a band of one chunk of input channels: 20 KB of the 32 KB L1 (the rest: the block's
 * weights, the output rows); bands of 64 to 512 pixels. */
enum { PW_L1_FLOATS = 5 * 1024, PW_MIN_BAND = 64, PW_MAX_BAND = 512 };


int decaf_pointwise_supported(const decaf_conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pad_top == 0 && g->pad_left == 0
           && g->G == 1 && g->Ho == g->H && g->Wo == g->W && g->C >= 1 && g->K >= 1;
}

ptrdiff_t decaf_pointwise_packed_size(const decaf_conv_geom *g)
{
    return (ptrdiff_t)((g->K + PW_R - 1) / PW_R) * PW_R * g->C;
}

ptrdiff_t decaf_pointwise_work_size(const decaf_conv_geom *g)
{
    (void)g;
    return 0;   /* none: w is read in either form */
}

void decaf_pointwise_pack(const decaf_conv_geom *g, const float *w, float *packed)
{
    const int C = g->C, K = g->K, blocks = (K + PW_R - 1) / PW_R;
    for (int kb = 0; kb < blocks; ++kb)   /* (reading rows of w: each is contiguous) */
        for (int r = 0; r < PW_R; ++r) {
            const int k = kb * PW_R + r;
            float *d = packed + (ptrdiff_t)kb * C * PW_R + r;
            for (int c = 0; c < C; ++c) d[(ptrdiff_t)c * PW_R] = k < K ? w[(ptrdiff_t)k * C + c] : 0.0f;
        }
}

/* The task grid: the image's ceil(P / 16) tiles cut in `nb` bands of (nearly) equal tile counts
 * (band i: tiles tiles i / nb .. tiles (i + 1) / nb; the last tile may be short), at most `width`
 * pixels each; the channel blocks cut in `nk` ranges; the input channels taken `chunk` at a time. */
typedef struct {
    ptrdiff_t tiles, width;
    int nb, nk, blocks, chunk;
} pw_tasks;

static pw_tasks plan_tasks(const decaf_conv_geom *g, int threads)
{
    pw_tasks t;
    const ptrdiff_t P = (ptrdiff_t)g->H * g->W;
    const int T = threads < 1 ? 1 : threads;
    t.blocks = (g->K + PW_R - 1) / PW_R;
    t.tiles = (P + 15) / 16;
    ptrdiff_t most = PW_L1_FLOATS / g->C / 16;   /* the most tiles in a band whose x fits the L1 budget */
    if (most < PW_MIN_BAND / 16) most = PW_MIN_BAND / 16;
    if (most > PW_MAX_BAND / 16) most = PW_MAX_BAND / 16;
    t.nb = (int)((t.tiles + most - 1) / most);
    t.nk = 1;
    /* At least two tasks per thread, and (while there are few) a multiple of the threads, so that
     * they share the tasks evenly: ranges of channel blocks (each keeps at least 2 blocks) first
     * for a small image, else narrower bands while they keep 8 tiles or more. */
    for (;;) {
        const ptrdiff_t n = (ptrdiff_t)g->B * t.nb * t.nk, widest = (t.tiles + t.nb - 1) / t.nb;
        if (n >= 2 * T && (n % T == 0 || n >= 8 * T))
            break;
        const int split_k = t.blocks / (t.nk + 1) >= 2;
        if (split_k && (P < 512 || widest < 8))
            ++t.nk;
        else if (widest >= 8)
            ++t.nb;
        else if (split_k)
            ++t.nk;
        else
            break;
    }
    t.width = 16 * ((t.tiles + t.nb - 1) / t.nb);
    if (t.width > P) t.width = P;
    t.chunk = (int)(PW_L1_FLOATS / t.width);
    if (t.chunk < 16) t.chunk = 16;
    if (t.chunk >= g->C) t.chunk = g->C;
    else t.chunk = (g->C + (g->C + t.chunk - 1) / t.chunk - 1) / ((g->C + t.chunk - 1) / t.chunk);   /* even chunks */
    return t;
}

#ifdef PW_SIMD
/* Lanes 0 .. n - 1 of a mask (n <= 8). */
static __m256i lanes(int n)
{
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - n));
}

/* The weights of row r for input channel c: w<r>[c * cs]. Rows past the kr real ones read row
 * kr - 1 (memory that exists in either form; their sums are never stored). */
#define PW_ROWS                                                                          \
    const float *w0 = wp, *w1 = wp + (kr > 1 ? 1 : kr - 1) * rs, *w2 = wp + (kr > 2 ? 2 : kr - 1) * rs; \
    const float *w3 = wp + (kr > 3 ? 3 : kr - 1) * rs, *w4 = wp + (kr > 4 ? 4 : kr - 1) * rs;           \
    const float *w5 = wp + (kr > 5 ? 5 : kr - 1) * rs;

/* The accumulators of row r start at y's row r (acc: a later chunk of input channels) or at the
 * bias; a row past the kr real ones starts at 0 and is never stored. */
#define PW_START16(r)                                                                    \
    __m256 a##r##0, a##r##1;                                                             \
    if (r < kr && acc) {                                                                 \
        a##r##0 = _mm256_loadu_ps(y + r * P); a##r##1 = _mm256_loadu_ps(y + r * P + 8);  \
    } else {                                                                             \
        a##r##0 = a##r##1 = _mm256_broadcast_ss(b6 + r);                                 \
    }
#define PW_FMA16(r)                                                                      \
    w = _mm256_broadcast_ss(w##r + c * cs);                                                   \
    a##r##0 = _mm256_fmadd_ps(w, x0, a##r##0); a##r##1 = _mm256_fmadd_ps(w, x1, a##r##1);
#define PW_STORE16(r)                                                                    \
    if (r < kr) {                                                                        \
        if (res) {                                                                       \
            a##r##0 = _mm256_add_ps(a##r##0, _mm256_loadu_ps(res + r * P));              \
            a##r##1 = _mm256_add_ps(a##r##1, _mm256_loadu_ps(res + r * P + 8));          \
        }                                                                                \
        if (fin) {                                                                       \
            a##r##0 = _mm256_min_ps(hi, _mm256_max_ps(lo, a##r##0));                     \
            a##r##1 = _mm256_min_ps(hi, _mm256_max_ps(lo, a##r##1));                     \
        }                                                                                \
        if (nt && !((uintptr_t)(y + r * P) & 31)) {                                      \
            _mm256_stream_ps(y + r * P, a##r##0); _mm256_stream_ps(y + r * P + 8, a##r##1); \
        } else {                                                                         \
            _mm256_storeu_ps(y + r * P, a##r##0); _mm256_storeu_ps(y + r * P + 8, a##r##1); \
        }                                                                                \
    }

/* Input channel c of a 16-pixel tile: 2 loads of x, 6 broadcasts of weights, 12 FMAs. */
#define PW_STEP16                                                                        \
    {                                                                                    \
        const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);               \
        __m256 w;                                                                        \
        PW_FMA16(0) PW_FMA16(1) PW_FMA16(2) PW_FMA16(3) PW_FMA16(4) PW_FMA16(5)          \
    }

/* 6 channels x 16 pixels over nc input channels: y[r][0 .. 16) (row stride P) for the kr <= 6 real
 * channels. wnext (NULL: none): the packed weights the next block will read, 6 floats per input
 * channel, brought into L1 as this tile runs: 3 lines per 8 input channels. */
static inline __attribute__((always_inline)) void tile16(const float *x, ptrdiff_t P, int nc, const float *wp, ptrdiff_t rs, ptrdiff_t cs,
                          const float *b6, float *y, int kr, int acc, const float *clamp, const float *res, int nt,
                          const float *wnext)
{
    const int fin = clamp != NULL;
    const __m256 lo = _mm256_set1_ps(fin ? clamp[0] : 0.0f), hi = _mm256_set1_ps(fin ? clamp[1] : 0.0f);
    PW_ROWS
    PW_START16(0) PW_START16(1) PW_START16(2) PW_START16(3) PW_START16(4) PW_START16(5)
    int c = 0;
    if (wnext)
        for (const char *pf = (const char *)wnext; c + 8 <= nc; pf += 8 * PW_R * sizeof(float)) {
            _mm_prefetch(pf, _MM_HINT_T0); _mm_prefetch(pf + 64, _MM_HINT_T0); _mm_prefetch(pf + 128, _MM_HINT_T0);
            for (const int end = c + 8; c < end; ++c, x += P)
                PW_STEP16
        }
    for (; c < nc; ++c, x += P)
        PW_STEP16
    PW_STORE16(0) PW_STORE16(1) PW_STORE16(2) PW_STORE16(3) PW_STORE16(4) PW_STORE16(5)
}

#define PW_START8(r)                                                                     \
    __m256 a##r = r < kr && acc ? _mm256_maskload_ps(y + r * P, m) : _mm256_broadcast_ss(b6 + r);
#define PW_FMA8(r) a##r = _mm256_fmadd_ps(_mm256_broadcast_ss(w##r + c * cs), x0, a##r);
#define PW_STORE8(r)                                                                     \
    if (r < kr) {                                                                        \
        if (res) a##r = _mm256_add_ps(a##r, _mm256_maskload_ps(res + r * P, m));          \
        if (clamp) a##r = _mm256_min_ps(_mm256_set1_ps(clamp[1]), _mm256_max_ps(_mm256_set1_ps(clamp[0]), a##r)); \
        _mm256_maskstore_ps(y + r * P, m, a##r);                                         \
    }

/* 6 channels x n <= 8 pixels (masked loads and stores when n < 8). */
static inline void tile8(const float *x, ptrdiff_t P, int nc, const float *wp, ptrdiff_t rs, ptrdiff_t cs,
                         const float *b6, float *y, int kr, int acc, int n, const float *clamp, const float *res)
{
    const __m256i m = lanes(n);
    PW_ROWS
    PW_START8(0) PW_START8(1) PW_START8(2) PW_START8(3) PW_START8(4) PW_START8(5)
    if (n == 8) {
        for (int c = 0; c < nc; ++c, x += P) {
            const __m256 x0 = _mm256_loadu_ps(x);
            PW_FMA8(0) PW_FMA8(1) PW_FMA8(2) PW_FMA8(3) PW_FMA8(4) PW_FMA8(5)
        }
    } else {
        for (int c = 0; c < nc; ++c, x += P) {
            const __m256 x0 = _mm256_maskload_ps(x, m);
            PW_FMA8(0) PW_FMA8(1) PW_FMA8(2) PW_FMA8(3) PW_FMA8(4) PW_FMA8(5)
        }
    }
    PW_STORE8(0) PW_STORE8(1) PW_STORE8(2) PW_STORE8(3) PW_STORE8(4) PW_STORE8(5)
}

/* 6 channels x n < 8 pixels, one pixel at a time with the 6 channels in the lanes: per input
 * channel one load of the block's 6 weights, one broadcast of the pixel, one FMA (a masked 16- or
 * 8-pixel tile would spend 6 FMAs per input channel on a few pixels). 4 running sums per pixel
 * (over c mod 4), so that the FMAs do not wait on each other. */
static inline void tail_cols(const float *x, ptrdiff_t P, int nc, const float *wp, const float *b6, float *y, int kr,
                             int acc, int n, const float *clamp, const float *res)
{
    const __m256i m = lanes(PW_R);
    for (int j = 0; j < n; ++j) {
        float start[8] = {0};
        for (int r = 0; r < PW_R; ++r) start[r] = r < kr && acc ? y[r * P + j] : b6[r];
        __m256 s0 = _mm256_loadu_ps(start), s1 = _mm256_setzero_ps(), s2 = s1, s3 = s1;
        const float *xj = x + j, *w = wp;
        int c = 0;
        for (; c + 4 <= nc; c += 4, xj += 4 * P, w += 4 * PW_R) {
            s0 = _mm256_fmadd_ps(_mm256_maskload_ps(w, m), _mm256_broadcast_ss(xj), s0);
            s1 = _mm256_fmadd_ps(_mm256_maskload_ps(w + PW_R, m), _mm256_broadcast_ss(xj + P), s1);
            s2 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 2 * PW_R, m), _mm256_broadcast_ss(xj + 2 * P), s2);
            s3 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 3 * PW_R, m), _mm256_broadcast_ss(xj + 3 * P), s3);
        }
        for (; c < nc; ++c, xj += P, w += PW_R)
            s0 = _mm256_fmadd_ps(_mm256_maskload_ps(w, m), _mm256_broadcast_ss(xj), s0);
        _mm256_storeu_ps(start, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (int r = 0; r < kr; ++r) {
            const float v = res ? start[r] + res[r * P + j] : start[r];
            y[r * P + j] = clamp ? decaf_clamp(v, clamp[0], clamp[1]) : v;
        }
    }
}
#endif

/* Inputs of 4 MB and more come from L3 or memory in one stream per input channel, more streams than
 * the hardware prefetchers follow: there each task brings the next task's band of x (its C rows
 * of the band's pixels) into L2 while it computes, a few lines before each 16-pixel tile. At batch
 * 16 (Zen 3, 2 threads, each layer alone, the same build with and without): 1.21-1.27x on 32->32
 * at 112x112 and 56x56 and 16->16 at 112x112, 1.03-1.15x on the expansions (16->96 at 112x112,
 * 24->144 and 32->64 at 56x56), 1.01-1.08x at 28x28; on inputs of 0.8-1.6 MB (batch 1) 0.94-1.03x. */
enum { PW_PREFETCH_BYTES = 4 << 20 };

typedef struct {
    const char *row;       /* the current row's next line */
    const char *row_end;   /* the end of the current row's band */
    ptrdiff_t stride;      /* bytes from one channel's row to the next */
    ptrdiff_t bytes;       /* bytes of a row's band */
    int rows, per;         /* rows left after the current one; prefetches per tile */
} pw_prefetch;

/* The band p0 .. p1 of image b, spread over `tiles` calls of pw_prefetch_some; 0 if nothing to do. */
static int pw_prefetch_start(pw_prefetch *pf, const float *x, int C, ptrdiff_t P, int b, ptrdiff_t p0,
                             ptrdiff_t p1, ptrdiff_t tiles)
{
    pf->stride = P * (ptrdiff_t)sizeof(float);
    pf->bytes = (p1 - p0) * (ptrdiff_t)sizeof(float);
    pf->row = (const char *)(x + (ptrdiff_t)b * C * P + p0);
    pf->row_end = pf->row + pf->bytes;
    pf->rows = C - 1;
    const ptrdiff_t lines = C * ((pf->bytes + 63) / 64 + 1);   /* (+1: a row's band rarely starts a line) */
    pf->per = tiles > 0 ? (int)((lines + tiles - 1) / tiles) : 0;
    return pf->per > 0 && p1 > p0;
}

#ifdef PW_SIMD
static int prefetches(const decaf_conv_geom *g)
{
    return (double)g->B * g->C * g->H * g->W * sizeof(float) >= PW_PREFETCH_BYTES;
}

static inline void pw_prefetch_some(pw_prefetch *pf)
{
    for (int k = 0; k < pf->per; ++k) {
        if (pf->row >= pf->row_end) {
            if (pf->rows == 0)
                return;
            --pf->rows;
            pf->row = pf->row_end - pf->bytes + pf->stride;
            pf->row_end = pf->row + pf->bytes;
        }
        _mm_prefetch(pf->row, _MM_HINT_T1);
        pf->row += 64;
    }
}
#endif

/* Channel block kb (kr real channels, y its first row) over pixels p0 .. p0 + len of one image, input
 * channels c0 .. c0 + nc (x at c0): y = bias + that part of the sum (acc 0), or y += it. The weight
 * of row r, input channel c is wp[r rs + c cs]: the packed form (rs 1, cs 6) or w itself (rs C,
 * cs 1), the strides constants in each inlined copy. */
static inline void block_band(const float *x, ptrdiff_t P, int nc, const float *wp, ptrdiff_t rs, ptrdiff_t cs,
                              const float *b6, float *y, int kr, int acc, ptrdiff_t p0, ptrdiff_t len,
                              const float *clamp, const float *res, int nt, pw_prefetch *prefetch,
                              const float *wnext)
{
#ifdef PW_SIMD
    ptrdiff_t p = p0;
    const ptrdiff_t end = p0 + len;
    for (; p + 16 <= end; p += 16) {
        if (prefetch)
            pw_prefetch_some(prefetch);
        if (kr == PW_R && !acc && !res && !nt)   /* (the common case, its tests folded away) */
            tile16(x + p, P, nc, wp, rs, cs, b6, y + p, PW_R, 0, clamp, NULL, 0, p == p0 ? wnext : NULL);
        else
            tile16(x + p, P, nc, wp, rs, cs, b6, y + p, kr, acc, clamp, res ? res + p : NULL, nt,
                   p == p0 ? wnext : NULL);
    }
    for (; p < end; p += 8) {
        if (p + 8 <= end || cs != PW_R) {
            tile8(x + p, P, nc, wp, rs, cs, b6, y + p, kr, acc, (int)(end - p < 8 ? end - p : 8), clamp,
                  res ? res + p : NULL);
        } else {   /* (the packed form: 6 weights side by side) */
            tail_cols(x + p, P, nc, wp, b6, y + p, kr, acc, (int)(end - p), clamp, res ? res + p : NULL);
            break;
        }
    }
#else
    (void)nt, (void)prefetch, (void)wnext;
    for (int r = 0; r < kr; ++r) {
        float *yr = y + (ptrdiff_t)r * P + p0;
        if (!acc)
            for (ptrdiff_t i = 0; i < len; ++i) yr[i] = b6[r];
        for (int c = 0; c < nc; ++c) {
            const float wv = wp[r * rs + c * cs];
            const float *xr = x + (ptrdiff_t)c * P + p0;
            for (ptrdiff_t i = 0; i < len; ++i) yr[i] += wv * xr[i];
        }
        if (res)
            for (ptrdiff_t i = 0; i < len; ++i) yr[i] += res[(ptrdiff_t)r * P + p0 + i];
        if (clamp)
            decaf_act_clamp(yr, yr, len, clamp[0], clamp[1]);
    }
#endif
}

void decaf_pointwise_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *packed, const float *bias, float *y, float *work,
                             const decaf_epilogue *ep)
{
    const int C = g->C, K = g->K, nt = threads < 1 ? 1 : threads;
    const ptrdiff_t P = (ptrdiff_t)g->H * g->W;
    if (g->B < 1 || P < 1)
        return;
    (void)work;   /* (w unpacked is read as it is: rows of C weights) */
    const pw_tasks t = plan_tasks(g, nt);
    const ptrdiff_t ntasks = (ptrdiff_t)g->B * t.nb * t.nk;
    /* A residual add and a clamp (ReLU, ReLU6), or either, or neither, are applied in the
     * registers before the last store: no epilogue pass. Outputs larger than the last-level cache
     * are then stored past the caches (no line read before it is written; the next layer reads
     * them from memory anyway). Other activations: the epilogue pass after each block. */
    const int in_registers = !ep || ep->act == DECAF_ACT_NONE || (ep->act == DECAF_ACT_CLAMP && !ep->out);
    const int clamps = ep && ep->act == DECAF_ACT_CLAMP;
    const float clamp[2] = {clamps ? ep->lo : 0.0f, clamps ? ep->hi : 0.0f};
    const float *residual = ep ? ep->residual : NULL;
    const int stream = in_registers && (double)g->B * K * P * sizeof(float) >= decaf_last_cache_bytes();
    const int team = ntasks < nt ? (int)ntasks : nt;
#ifdef PW_SIMD
    const int prefetch = prefetches(g);
#else
    const int prefetch = 0;   /* (the plain loops do not take it) */
#endif
    /* Each thread a contiguous range of the tasks, numbered band fastest, then image, then range of
     * channel blocks: a thread's bands are neighbours (one shared cache line per output row
     * between two threads, not one per band: the rows are rarely 64-byte aligned, and a chunked
     * band reads and writes its outputs once per chunk), and with several ranges of channel
     * blocks the threads split the channels, not the pixels. (Handing the tasks round-robin ran
     * up to 1.2x slower.) */
    #pragma omp parallel for schedule(static) num_threads(team)
    for (ptrdiff_t task = 0; task < ntasks; ++task) {
        const int band = (int)(task % t.nb), b = (int)(task / t.nb % g->B), kc = (int)(task / t.nb / g->B);
        const ptrdiff_t p0 = 16 * (t.tiles * band / t.nb), p1 = 16 * (t.tiles * (band + 1) / t.nb);
        const ptrdiff_t len = (p1 < P ? p1 : P) - p0;
        const float *xb = x + (ptrdiff_t)b * C * P;
        float *yb = y + (ptrdiff_t)b * K * P;
        const int kb0 = t.blocks * kc / t.nk, kb1 = t.blocks * (kc + 1) / t.nk;
        /* the next task's band, unless it reads this one's (another range of channel blocks) */
        const int next_band = (int)((task + 1) % t.nb), next_b = (int)((task + 1) / t.nb % g->B);
        pw_prefetch pf, *pfp = NULL;
        if (prefetch && task + 1 < ntasks && (next_band != band || next_b != b)) {
            const ptrdiff_t q0 = 16 * (t.tiles * next_band / t.nb), q1 = 16 * (t.tiles * (next_band + 1) / t.nb);
            const ptrdiff_t tiles = (ptrdiff_t)((C + t.chunk - 1) / t.chunk) * (kb1 - kb0) * (len / 16);
            if (pw_prefetch_start(&pf, x, C, P, next_b, q0, q1 < P ? q1 : P, tiles))
                pfp = &pf;
        }
        for (int c0 = 0; c0 < C; c0 += t.chunk) {   /* chunks of input channels whose band stays in L1 */
            const int nc = C - c0 < t.chunk ? C - c0 : t.chunk, last = c0 + nc == C;
            for (int kb = kb0; kb < kb1; ++kb) {
                const int k0 = kb * PW_R, kr = K - k0 < PW_R ? K - k0 : PW_R;
                float b6[PW_R];
                for (int r = 0; r < PW_R; ++r) b6[r] = bias && r < kr ? bias[k0 + r] : 0.0f;
                const float *cl = in_registers && last && clamps ? clamp : NULL;
                const float *res = in_registers && last && residual ? residual + ((ptrdiff_t)b * K + k0) * P : NULL;
                if (packed)   /* (the next block's weights of this chunk: brought in while this block runs) */
                    block_band(xb + (ptrdiff_t)c0 * P, P, nc, packed + ((ptrdiff_t)kb * C + c0) * PW_R, 1, PW_R,
                               b6, yb + (ptrdiff_t)k0 * P, kr, c0 > 0, p0, len, cl, res, stream && last, pfp,
                               kb + 1 < t.blocks ? packed + ((ptrdiff_t)(kb + 1) * C + c0) * PW_R : NULL);
                else
                    block_band(xb + (ptrdiff_t)c0 * P, P, nc, w + (ptrdiff_t)k0 * C + c0, C, 1, b6,
                               yb + (ptrdiff_t)k0 * P, kr, c0 > 0, p0, len, cl, res, stream && last, pfp, NULL);
                if (ep && last && !in_registers)   /* the bias is in already: the residual and the activation */
                    for (int r = 0; r < kr; ++r)
                        decaf_epilogue_at(ep, y, ((ptrdiff_t)b * K + k0 + r) * P + p0, len, 0.0f);
            }
        }
#ifdef PW_SIMD
        if (stream)
            _mm_sfence();   /* the streamed stores visible before the threads join */
#endif
    }
}

/* Where benchmarks/bench_pointwise.py (AMD EPYC Zen 3, family 25 model 1, AVX2, 2 threads, best of
 * 5 interleaved rounds on a shared machine; results_pointwise*_2026-12-07.json) measured this kernel
 * faster than the OpenBLAS SGEMM per image: the expansion layers of a narrow input, C <= 48 and
 * K >= 4 C, on planes of 256 pixels or more, where the BLAS spends its time packing a short, wide
 * operand. Ratios (GEMM time / this kernel's) over 4 runs at batch 1 and 2 at batch 16:
 *     MobileNetV2 16->96 at 112x112   0.87-1.32 (3 of 4 >= 1.23)   batch 16: 1.21, 1.22
 *                 24->144 at 56x56    1.11-1.54                    1.09, 1.26
 *                 32->192 at 28x28    0.88-1.08                    1.09, 1.30
 *     EfficientNet-B0 40->240 at 28   0.98-1.11                    0.94, 1.11
 *     MobileNetV3 16->64 at 112x112   0.78-1.18 (3 of 4 >= 1.04)   1.21, 1.44
 * Then (2026-12-07, a later session, single runs interleaving conv_forward and this kernel, best of
 * 40 calls, 1 and 2 threads) also the narrow inputs that do not widen 4x, which went to the GEMM:
 * MobileNetV3's 16->16 at 112x112 1.25-1.46x, 24->72 at 56x56 1.18-1.42x, ShuffleNetV2's 24->58
 * at 56x56 1.17-1.29x, 32->96 at 56x56 1.11-1.21x, 40->120 at 28x28 1.05-1.20x (batch 1 on 1 and
 * 2 threads, batch 16 on 1). So: C <= 48 and K >= C. A narrow input that shrinks stays on the GEMM
 * (MobileNetV2's 32->16 at 112x112: the GEMM 1.2x faster at batch 4 and 16); so do 58->58 and
 * 72->24, 0.81-1.17x from setting to setting, except with fewer images than threads (batch 1):
 * then inputs up to 128 channels on planes of 28x28 and up measured 1.07-1.17x (58->58 and 120->40
 * at 28x28, 72->24 at 56x56; 14x14 planes 0.95-1.12x, not taken).
 * Not for a wider input (C >= 72): there the GEMM was as fast or faster, up to 1.5x on the
 * projections of large planes (96->24 and 144->24 at 56x56, 240->40 at 28x28, batch 16) and on
 * the 14x14 layers (0.65-1.1x); the 7x7 layers were 0.8-1.2x from run to run. (Copying a band's
 * tiles into a contiguous buffer, as the GEMM packs its operand, did not close that gap.) The same
 * rule for every thread count (the runs had 2).
 * With the prefetch (inputs of 4 MB and more; 2026-12-07, each layer alone, the kernel and the GEMM
 * taking turns in one process, best of 9): a narrow input that shrinks, too, at batch 16 32->16 at
 * 112x112 1.22-1.29x, 48->24, 40->24 and 48->16 at 56x56 1.16-1.24x, at batch 4 1.09-1.26x (with a
 * residual add 0.92-1.12x); 64 input channels stay on the GEMM (64->64 and 64->256 at 56x56,
 * 64->64 at 28x28: 1.01-1.03x).
 * Small planes, 4x4 to 8x8 pixels, every width (2026-12-07, AMD EPYC family 25 model 17 (Zen 4)
 * with AVX2 only, with the next block's weights prefetched): in a net the weights come from L3 or
 * memory, and the GEMM packs them first, this kernel reads them once with the prefetch ahead. Each
 * layer alone with 24 sets of weights taken in turn (so cold): 400->400, 2048->512 and 512->2048 at
 * 7x7, batch 1, one thread, 73, 72, 72 GFLOP/s against the GEMM's 58, 64, 58 (ONNX Runtime 68-76).
 * Whole nets, batch 1, one thread, the same build with the rule and without, taking turns (median
 * of 28 passes each): RegNetX-400MF 1.12x, MobileNetV2 1.06x, MNASNet 1.06x, RegNetY-400MF 1.05x,
 * MobileNetV3-Large 1.05x, EfficientNet-B0 1.02x, DenseNet-121 1.01x, Inception-v3 and ResNet-50
 * 1.00x; on 2 threads RegNetX 1.04x, MNASNet 1.06x, MobileNetV2 and ResNet-50 1.00-1.02x; batch 16
 * on 2 threads 1.00-1.06x. Not a single pixel (squeeze-excitation layers: leaving them to the
 * GEMV gave RegNetY, MobileNetV3 and EfficientNet-B0 1.01-1.05x more), nor the 14x14 planes (as
 * one band, chunks of 128 channels, they added -0.02 to +0.03x to the nets). */
enum { PW_SMALL_MIN = 16, PW_SMALL_MAX = 64 };

int decaf_pointwise_preferred(const decaf_conv_geom *g, int threads)
{
#ifdef PW_SIMD
    const ptrdiff_t P = (ptrdiff_t)g->H * g->W;
    if (!decaf_pointwise_supported(g))
        return 0;
    if (P >= PW_SMALL_MIN && P <= PW_SMALL_MAX)
        return 1;
    if (P < 256)
        return 0;
    return (g->C <= 48 && (g->K >= g->C || prefetches(g))) || (g->B < threads && g->C <= 128 && P >= 784);
#else
    (void)g, (void)threads;
    return 0;   /* the generic variant's plain loops: not measured faster than the BLAS */
#endif
}
