#include "conv.h"

#include <string.h>

#include "activation.h"
#include "direct_conv.h"
#include "gemm.h"
#include "grouped_conv.h"
#include "im2col.h"
#include "pointwise.h"
#include "stem_conv.h"
#include "threads.h"
#include "winograd.h"

/* A thread groups its images into blocks of about this many output pixels, so that each GEMM is
 * wide (the BLAS packs the weights once per call: wide calls pay that once for many images). */
enum { BLOCK_COLUMNS = 256 };

#define GEOM_ARGS(g) (g)->C, (g)->H, (g)->W, (g)->kh, (g)->kw, (g)->sh, (g)->sw, \
                     (g)->pad_top, (g)->pad_left, (g)->dh, (g)->dw, (g)->Ho, (g)->Wo

/* 1x1, stride 1, no padding: im2col(x[b]) would be x[b] itself, so the GEMMs read x directly. */
static int is_pointwise(const decaf_conv_geom *g)
{
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pad_top == 0 && g->pad_left == 0
           && g->Ho == g->H && g->Wo == g->W;
}

/* A 1x1 convolution's forward blocks images only on planes below this many pixels (7x7, 8x8):
 * it reads x in place when an image goes alone, but a block's x must be gathered into (C, n hw)
 * first. OpenBLAS on one thread (Zen 3) ran ResNet-50's and MobileNetV2's 7x7 products at 62-80
 * GFLOP/s with 49 columns and 88-94 with 196-392, but those of 14x14 layers at 83-92 with 196
 * columns and at most 2 % faster with 392. Blocked, eight 7x7 layers of ResNet-50, MobileNetV2
 * and DenseNet-121 took 1.10-1.11x less time at batch 16 (benchmarks/bench_pointwise_blocks.py).
 * (In the AVX2 and AVX-512 variants the 4x4 to 8x8 planes now go to the pointwise kernel instead,
 * pointwise.c's decaf_pointwise_preferred: this is for the generic variant and the other planes.) */
enum { POINTWISE_BLOCKED_BELOW = 100 };

/* Images per block for a thread with up to `per_thread` images (a backward 1x1 convolution: 1). */
static int block_images(const decaf_conv_geom *g, int per_thread, int backward)
{
    const int hw = g->Ho * g->Wo;
    int nb = (BLOCK_COLUMNS + hw - 1) / hw;
    /* (1x1 planes: one product for the whole batch, see decaf_conv_forward) */
    if (is_pointwise(g) && (backward || hw >= POINTWISE_BLOCKED_BELOW || hw == 1))
        nb = 1;
    if (nb > per_thread) nb = per_thread;
    return nb < 1 ? 1 : nb;
}

/* The size of the next block when `left` images remain and blocks hold at most nb: the blocks
 * are made even (5 images with nb = 4 go as 3 + 2, not 4 + 1: a 1-image GEMM is narrow). */
static int next_block(int left, int nb)
{
    const int blocks = (left + nb - 1) / nb;
    return (left + blocks - 1) / blocks;
}

/* A single image is split by bands of output rows from this many output pixels on (see
 * decaf_conv_forward). */
enum { WIDE = 1024 };

/* Winograd on a grouped convolution (CaffeNet's conv4 and conv5: 2 groups of 192 channels) runs
 * group by group on one group's geometry: the group's slice of x gathered into contiguous images,
 * Winograd into contiguous outputs, scattered into y's slice with the bias and epilogue (the
 * copies cost ~1 % of such a group's arithmetic). With one group: the geometry itself. */
static decaf_conv_geom one_group(const decaf_conv_geom *g)
{
    decaf_conv_geom s = *g;
    s.C = g->C / g->G, s.K = g->K / g->G, s.G = 1;
    return s;
}

/* floats of one group's gathered x and Winograd output (0 with one group) */
static ptrdiff_t group_copies(const decaf_conv_geom *g)
{
    if (g->G == 1)
        return 0;
    return (ptrdiff_t)g->B * (g->C / g->G) * g->H * g->W + (ptrdiff_t)g->B * (g->K / g->G) * g->Ho * g->Wo;
}

/* For each of B images: its n channels from channel dc0 of dst (dC channels an image) = those from
 * sc0 of src (sC an image). Gathers a group's slice (dC = n, dc0 = 0) and scatters it back. */
static void copy_planes(float *dst, int dC, int dc0, const float *src, int sC, int sc0, int B, int n, ptrdiff_t plane,
                        int threads)
{
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int b = 0; b < B; ++b)
        memcpy(dst + ((ptrdiff_t)b * dC + dc0) * plane, src + ((ptrdiff_t)b * sC + sc0) * plane,
               sizeof(float) * (size_t)n * (size_t)plane);
}

decaf_conv_plan decaf_conv_make_plan(const decaf_conv_geom *g, int threads, int mode)
{
    decaf_conv_plan p = {0};
    const int backward = mode == DECAF_PLAN_BACKWARD || mode == DECAF_PLAN_WEIGHT_GRAD;
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo;
    p.threads = threads < 1 ? 1 : threads;
    p.backward = backward != 0;
    p.by_image = g->B >= p.threads;
    p.block = 1;
    /* Winograd where it measured faster (winograd.c's decaf_winograd_preferred, 0 where it is not
     * supported), for callers that pack the weights once; else the grouped kernel for narrow groups;
     * else direct where it applies; else im2col + GEMM. */
    const decaf_conv_geom sub = one_group(g);
    /* Grouped: only from 64 tiles on (4x4 outputs each). With fewer the groups' Winograd calls, each
     * on few tiles, and the copies lost to the direct kernel: CaffeNet's conv4 at batch 1 (16
     * tiles, 2 threads) 2.5 ms against 2.0; at batch 16 18.3 against 23.4 (Zen 3). */
    const ptrdiff_t tiles = (ptrdiff_t)g->B * ((g->Ho + 3) / 4) * ((g->Wo + 3) / 4);
    const int divisible = g->C % g->G == 0 && g->K % g->G == 0 && (g->G == 1 || tiles >= 64);
    p.winograd = mode == DECAF_PLAN_PREPACKED && divisible && decaf_winograd_preferred(&sub, p.threads);
    if (p.winograd) {
        p.pack = DECAF_PACK_WINOGRAD;
        p.packed = g->G * decaf_winograd_packed_size(&sub);
        p.slot = p.work = decaf_winograd_work_size(&sub, p.threads) + group_copies(g);
        p.slots = 1;
        return p;
    }
    /* The weight gradient alone (the caller computes dx, e.g. as a forward convolution): Winograd's
     * transposed transforms where the forward would pick Winograd (4x fewer multiply-adds there too). */
    /* (from 64 tiles on: each call transforms dU back, 36 K C values, which a handful of tiles do
     * not pay for: ResNet's 512 x 512 at 7x7, batch 4, 16 tiles: 17.2 ms against GEMM's 15.0) */
    p.winograd = mode == DECAF_PLAN_WEIGHT_GRAD && divisible && tiles >= 64 && decaf_winograd_preferred(&sub, p.threads);
    if (p.winograd) {
        p.slot = p.work = decaf_winograd_weight_grad_work_size(&sub) + group_copies(g);   /* (x and dy slices) */
        p.slots = 1;
        return p;
    }
    /* A 3x3 convolution of at most 4 input channels (mobile nets' stems) by the direct stem kernel
     * where it measured faster than im2col + GEMM (stem_conv.c's decaf_stem_conv_preferred). It
     * packs its (tiny) weights into its scratch on every call: no prepacked form. */
    p.stem = !backward && decaf_stem_conv_preferred(g, p.threads);
    if (p.stem) {
        p.slot = p.work = decaf_stem_conv_work_size(g, p.threads);
        p.slots = 1;
        return p;
    }
    /* A 1x1 convolution by the direct pointwise kernel where it measured faster than the GEMM
     * (pointwise.c's decaf_pointwise_preferred: narrow inputs that do not shrink, C <= 48, K >= C);
     * it reads w as it is, or the packed form when the caller packed it once. No scratch. */
    p.pointwise = !backward && decaf_pointwise_preferred(g, p.threads);
    if (p.pointwise) {
        p.pack = DECAF_PACK_POINTWISE;
        p.packed = decaf_pointwise_packed_size(g);
        p.slot = p.work = decaf_pointwise_work_size(g);
        p.slots = 1;
        return p;
    }
    p.grouped = !backward && decaf_grouped_conv_preferred(g, p.threads);   /* (preferred: also supported) */
    if (p.grouped) {   /* the forward packs into its scratch itself unless given the weights packed */
        p.pack = DECAF_PACK_GROUPED;
        p.packed = decaf_grouped_conv_packed_size(g);
        p.slot = p.work = decaf_grouped_conv_work_size(g, p.threads);
        p.slots = 1;
        return p;
    }
    p.direct = !backward && decaf_direct_conv_supported(g);
    if (p.direct) {
        decaf_direct_conv_scratch(g, &p);
        p.pack = DECAF_PACK_DIRECT;
        p.packed = decaf_direct_conv_packed_size(g);
        return p;
    }
    if (p.by_image)
        p.block = block_images(g, (g->B + p.threads - 1) / p.threads, backward);
    else if (!backward)
        p.split = g->G % p.threads == 0 ? DECAF_SPLIT_GROUPS : hw >= WIDE ? DECAF_SPLIT_ROWS : DECAF_SPLIT_CHANNELS;
    /* (a 1x1 convolution: no im2col, but a block of several images gathers x into cols) */
    p.cols = is_pointwise(g) && p.block == 1 ? 0 : (ptrdiff_t)g->C * g->kh * g->kw * p.block * hw;
    if (backward && p.by_image)
        p.partial = (ptrdiff_t)g->K * (g->C / g->G) * g->kh * g->kw + g->K;
    /* a thread's slot: cols (and dcols when backward), a (K, block Ho Wo) block of outputs / output
     * gradients when a block has several images, and the partial sums */
    p.slot = (backward ? 2 : 1) * p.cols + (p.block > 1 ? (ptrdiff_t)g->K * p.block * hw : 0) + p.partial;
    /* The few-images backward runs one image at a time with its im2col and GEMMs split over the
     * threads: one shared slot. Every other case gives each thread its own. */
    p.slots = backward && !p.by_image ? 1 : p.threads;
    p.work = p.slots * p.slot;
    return p;
}

/* The epilogue (activation.h) on `len` values of each channel k0..k1 of the output tensor y,
 * channel k's starting at y + at + k * stride: y += bias[k] (if any), the residual added, the
 * activation applied (in y or into ep->out). */
static void epilogue_part(const decaf_epilogue *ep, float *y, ptrdiff_t at, const float *bias, int k0, int k1,
                          ptrdiff_t stride, ptrdiff_t len)
{
    for (int k = k0; k < k1; ++k)
        decaf_epilogue_at(ep, y, at + k * stride, len, bias ? bias[k] : 0.0f);
}

/* The same for a block of n images laid out (K, n hw), those from image b on: y[b + i] (K, hw) =
 * block[:, i hw : (i + 1) hw], then the epilogue. */
static void scatter_block(const decaf_epilogue *ep, const float *block, float *y, int b, const float *bias, int K,
                          ptrdiff_t hw, int n)
{
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < K; ++k) {
            const float *s = block + (ptrdiff_t)k * n * hw + i * hw;
            float *d = y + ((ptrdiff_t)(b + i) * K + k) * hw;
            for (ptrdiff_t p = 0; p < hw; ++p) d[p] = s[p];
        }
        epilogue_part(ep, y, (ptrdiff_t)(b + i) * K * hw, bias, 0, K, hw, hw);
    }
}

/* The inverse layout change: block (K, n hw) from n images t[0 .. n) (each (K, hw)): the output
 * gradients of a block, or the inputs of a 1x1 convolution's block. */
static void gather_block(const float *t, float *block, int K, ptrdiff_t hw, int n)
{
    for (int i = 0; i < n; ++i)
        for (int k = 0; k < K; ++k) {
            const float *s = t + ((ptrdiff_t)i * K + k) * hw;
            float *d = block + (ptrdiff_t)k * n * hw + i * hw;
            for (ptrdiff_t p = 0; p < hw; ++p) d[p] = s[p];
        }
}

void decaf_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *packed)
{
    if (p->pack == DECAF_PACK_DIRECT)
        decaf_direct_conv_pack(g, p, w, packed);
    else if (p->pack == DECAF_PACK_WINOGRAD) {   /* group by group: U of group gi after group gi - 1's */
        const decaf_conv_geom sub = one_group(g);
        const ptrdiff_t per_w = (ptrdiff_t)sub.K * sub.C * 9, per_u = decaf_winograd_packed_size(&sub);
        for (int gi = 0; gi < g->G; ++gi)
            decaf_winograd_pack(&sub, w + gi * per_w, packed + gi * per_u);
    }
    else if (p->pack == DECAF_PACK_GROUPED)
        decaf_grouped_conv_pack(g, w, packed);
    else if (p->pack == DECAF_PACK_POINTWISE)
        decaf_pointwise_pack(g, w, packed);
}

void decaf_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                        const float *packed, const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, plane_in = (ptrdiff_t)g->C * g->H * g->W;
    const int rows = g->C * g->kh * g->kw, Kg = g->K / g->G, Rg = rows / g->G;
    const int nt = p->threads, pointwise = is_pointwise(g);
    const ptrdiff_t tw = p->slot;

    if (p->winograd) {   /* (a prepacked plan: packed is never NULL, the wrapper sees to it) */
        if (g->G == 1) {
            decaf_winograd_forward(g, p->threads, x, packed, bias, y, work, ep);
            return;
        }
        const decaf_conv_geom sub = one_group(g);
        const ptrdiff_t plane_x = (ptrdiff_t)g->H * g->W, per_u = decaf_winograd_packed_size(&sub);
        float *xg = work, *yg = xg + (ptrdiff_t)g->B * sub.C * plane_x, *wino = yg + (ptrdiff_t)g->B * sub.K * hw;
        for (int gi = 0; gi < g->G; ++gi) {
            copy_planes(xg, sub.C, 0, x, g->C, gi * sub.C, g->B, sub.C, plane_x, nt);
            decaf_winograd_forward(&sub, nt, xg, packed + gi * per_u, NULL, yg, wino, NULL);
            copy_planes(y, g->K, gi * sub.K, yg, sub.K, 0, g->B, sub.K, hw, nt);
            #pragma omp parallel for schedule(static) num_threads(nt)
            for (int i = 0; i < g->B * sub.K; ++i) {   /* the bias and epilogue on the group's planes */
                const int b = i / sub.K, k = gi * sub.K + i % sub.K;
                decaf_epilogue_at(ep, y, ((ptrdiff_t)b * g->K + k) * hw, hw, bias ? bias[k] : 0.0f);
            }
        }
        return;
    }
    if (p->stem) {
        decaf_stem_conv_forward(g, p->threads, x, w, bias, y, work, ep);
        return;
    }
    if (p->pointwise) {
        decaf_pointwise_forward(g, p->threads, x, w, packed, bias, y, work, ep);
        return;
    }
    if (p->grouped) {
        if (packed)
            decaf_grouped_conv_forward_packed(g, p->threads, x, packed, bias, y, work, ep);
        else
            decaf_grouped_conv_forward(g, p->threads, x, w, bias, y, work, ep);
        return;
    }
    if (p->direct) {
        decaf_direct_conv_forward(g, p, x, w, packed, bias, y, work, ep);
        return;
    }
    decaf_blas_single_threaded();
    if (pointwise && hw == 1 && g->G == 1) {
        /* 1x1 planes (a squeeze-and-excitation block's two convolutions after its global pooling):
         * x is a (B, C) matrix and y (B, K), so y = x w^T is one product for the whole batch (a
         * matrix-vector product at batch 1), not B products of one column each. */
        decaf_sgemm(0, 1, g->B, g->K, g->C, 1.0f, x, g->C, w, g->C, 0.0f, y, g->K);
        for (int b = 0; b < g->B; ++b) {
            float *yb = y + (ptrdiff_t)b * g->K;
            if (bias)
                for (int k = 0; k < g->K; ++k) yb[k] += bias[k];
            decaf_epilogue_at(ep, y, (ptrdiff_t)b * g->K, g->K, 0.0f);   /* (bias 0: added above) */
        }
        return;
    }
    if (p->by_image) {
        const int nb = p->block;
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *cols = work + t * tw;
            float *block = cols + p->cols;
            const int b1 = g->B * (t + 1) / T;
            for (int b = g->B * t / T, n; b < b1; b += n) {
                n = next_block(b1 - b, nb);
                const int ld = (int)(n * hw);
                const float *src = pointwise && n == 1 ? x + b * plane_in : cols;
                float *out = n == 1 ? y + (ptrdiff_t)b * g->K * hw : block;
                if (!pointwise)
                    decaf_im2col_serial(x + b * plane_in, cols, n, GEOM_ARGS(g));
                else if (n > 1)   /* a 1x1 convolution's im2col of n images: x's planes side by side */
                    gather_block(x + b * plane_in, cols, g->C, hw, n);
                for (int gi = 0; gi < g->G; ++gi)
                    decaf_sgemm_serial(0, 0, Kg, ld, Rg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg,
                                       src + (ptrdiff_t)gi * Rg * ld, ld, 0.0f, out + (ptrdiff_t)gi * Kg * ld, ld);
                if (n == 1)
                    epilogue_part(ep, y, (ptrdiff_t)b * g->K * hw, bias, 0, g->K, hw, hw);
                else
                    scatter_block(ep, block, y, b, bias, g->K, hw, n);
            }
        }
        return;
    }
    /* Fewer images than threads: each image is split, in one parallel region, one of three ways
     * (p->split):
     * - whole groups per thread when the groups divide evenly (AlexNet's conv2, 4, 5);
     * - a wide image (>= WIDE output pixels): a band of output rows oh0..oh1 per thread, whose
     *   im2col is that of the image with the band's windows (pad_top shifted by oh0 * sh) into
     *   the thread's own buffer, and whose GEMM writes columns oh0 Wo .. oh1 Wo of y;
     * - else (a small image, e.g. 13x13: a band would make narrow GEMMs): one im2col shared by
     *   the threads, then a slice of the output channels per thread.
     * No GEMM is split after the fact; each thread runs the epilogue on what it computed. */
    const int by_groups = p->split == DECAF_SPLIT_GROUPS, by_rows = p->split == DECAF_SPLIT_ROWS;
    for (int b = 0; b < g->B; ++b) {
        const float *xb = x + b * plane_in;
        float *yb = y + (ptrdiff_t)b * g->K * hw;
        const ptrdiff_t at = (ptrdiff_t)b * g->K * hw;   /* image b in y */
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *cols = work + t * tw;
            if (by_groups) {
                const int Cg = g->C / g->G;
                for (int gi = g->G * t / T; gi < g->G * (t + 1) / T; ++gi) {
                    const float *src = pointwise ? xb + (ptrdiff_t)gi * Rg * hw : cols;
                    if (!pointwise)
                        decaf_im2col_serial(xb + (ptrdiff_t)gi * Cg * g->H * g->W, cols, 1, Cg, g->H, g->W,
                                            g->kh, g->kw, g->sh, g->sw, g->pad_top, g->pad_left, g->dh, g->dw,
                                            g->Ho, g->Wo);
                    decaf_sgemm_serial(0, 0, Kg, (int)hw, Rg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg, src, (int)hw,
                                       0.0f, yb + (ptrdiff_t)gi * Kg * hw, (int)hw);
                    epilogue_part(ep, y, at, bias, gi * Kg, (gi + 1) * Kg, hw, hw);
                }
            } else if (by_rows) {
                const int oh0 = g->Ho * t / T, oh1 = g->Ho * (t + 1) / T;
                const int n = (oh1 - oh0) * g->Wo;   /* this thread's columns of y */
                if (n > 0) {
                    const float *src = pointwise ? xb + (ptrdiff_t)oh0 * g->Wo : cols;
                    const int ld = pointwise ? (int)hw : n;
                    if (!pointwise)
                        decaf_im2col_serial(xb, cols, 1, g->C, g->H, g->W, g->kh, g->kw, g->sh, g->sw,
                                            g->pad_top - oh0 * g->sh, g->pad_left, g->dh, g->dw, oh1 - oh0, g->Wo);
                    for (int gi = 0; gi < g->G; ++gi)
                        decaf_sgemm_serial(0, 0, Kg, n, Rg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg,
                                           src + (ptrdiff_t)gi * Rg * ld, ld, 0.0f,
                                           yb + (ptrdiff_t)gi * Kg * hw + (ptrdiff_t)oh0 * g->Wo, (int)hw);
                    epilogue_part(ep, y, at + (ptrdiff_t)oh0 * g->Wo, bias, 0, g->K, hw, n);
                }
            } else {
                const float *src = pointwise ? xb : work;     /* the shared cols: thread 0's buffer */
                if (!pointwise) {
                    #pragma omp for schedule(static)
                    for (int r = 0; r < rows; ++r)            /* (ends with a barrier) */
                        decaf_im2col_row(xb, work, r, 1, GEOM_ARGS(g));
                }
                const int m0 = Kg * t / T, m1 = Kg * (t + 1) / T;
                for (int gi = 0; gi < g->G && m1 > m0; ++gi)
                    decaf_sgemm_serial(0, 0, m1 - m0, (int)hw, Rg, 1.0f, w + ((ptrdiff_t)gi * Kg + m0) * Rg, Rg,
                                       src + (ptrdiff_t)gi * Rg * hw, (int)hw, 0.0f,
                                       yb + ((ptrdiff_t)gi * Kg + m0) * hw, (int)hw);
                for (int gi = 0; gi < g->G; ++gi)
                    epilogue_part(ep, y, at, bias, gi * Kg + m0, gi * Kg + m1, hw, hw);
            }
        }
    }
}

/* sums[k] (+)= the sum of dy[k * len .. (k + 1) * len) for k < K: db's share of `len` pixels,
 * added to sums when accumulate, else written over them. */
static void channel_sums(const float *dy, int K, ptrdiff_t len, float *sums, int accumulate)
{
    for (int k = 0; k < K; ++k) {
        float s = 0.0f;
        for (ptrdiff_t p = 0; p < len; ++p) s += dy[k * len + p];
        sums[k] = accumulate ? sums[k] + s : s;
    }
}

void decaf_conv_backward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db, float *work)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, plane_in = (ptrdiff_t)g->C * g->H * g->W;
    const ptrdiff_t plane_out = (ptrdiff_t)g->K * hw;
    const int rows = g->C * g->kh * g->kw, Kg = g->K / g->G, Rg = rows / g->G;
    const ptrdiff_t wsize = (ptrdiff_t)g->K * Rg, colsz = p->cols;
    const int nt = p->threads, pointwise = is_pointwise(g);

    if (p->winograd) {   /* a DECAF_PLAN_WEIGHT_GRAD plan: dx is NULL */
        if (g->G == 1) {
            decaf_winograd_weight_grad(g, p->threads, x, dy, dw, db, work);
            return;
        }
        const decaf_conv_geom sub = one_group(g);
        const ptrdiff_t plane_x = (ptrdiff_t)g->H * g->W, per_w = (ptrdiff_t)sub.K * sub.C * 9;
        float *xg = work, *dyg = xg + (ptrdiff_t)g->B * sub.C * plane_x, *wino = dyg + (ptrdiff_t)g->B * sub.K * hw;
        for (int gi = 0; gi < g->G; ++gi) {   /* dw's filters of group gi are rows gi K/G .. : contiguous */
            copy_planes(xg, sub.C, 0, x, g->C, gi * sub.C, g->B, sub.C, plane_x, nt);
            copy_planes(dyg, sub.K, 0, dy, g->K, gi * sub.K, g->B, sub.K, hw, nt);
            decaf_winograd_weight_grad(&sub, nt, xg, dyg, dw + gi * per_w, db ? db + gi * sub.K : NULL, wino);
        }
        return;
    }
    decaf_blas_single_threaded();
    if (p->by_image) {
        /* work = per thread [cols, dcols, dy block, dw partial, db partial] */
        const int nb = p->block;
        const ptrdiff_t tw = p->slot, acc = p->partial;
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *cols = work + t * tw, *dcols = cols + colsz, *block = dcols + colsz;
            float *part = work + t * tw + (tw - acc);
            const int b1 = g->B * (t + 1) / T;
            for (ptrdiff_t i = 0; i < acc; ++i) part[i] = 0.0f;   /* a thread with no images adds zeros */
            for (int b = g->B * t / T, n; b < b1; b += n) {
                n = next_block(b1 - b, nb);
                const int ld = (int)(n * hw);
                const float *src = pointwise ? x + b * plane_in : cols;
                const float *dyb = dy + b * plane_out;
                if (!pointwise)
                    decaf_im2col_serial(x + b * plane_in, cols, n, GEOM_ARGS(g));
                if (n > 1) {
                    gather_block(dyb, block, g->K, hw, n);
                    dyb = block;
                }
                for (int gi = 0; gi < g->G; ++gi)   /* dw_g += dy_g cols_g^T */
                    decaf_sgemm_serial(0, 1, Kg, Rg, ld, 1.0f, dyb + (ptrdiff_t)gi * Kg * ld, ld,
                                       src + (ptrdiff_t)gi * Rg * ld, ld, 1.0f, part + (ptrdiff_t)gi * Kg * Rg, Rg);
                if (db)
                    channel_sums(dyb, g->K, ld, part + wsize, 1);
                if (dx) {   /* dcols_g = w_g^T dy_g, folded back into dx (pointwise: dx itself) */
                    float *dst = pointwise ? dx + b * plane_in : dcols;
                    for (int gi = 0; gi < g->G; ++gi)
                        decaf_sgemm_serial(1, 0, Rg, ld, Kg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg,
                                           dyb + (ptrdiff_t)gi * Kg * ld, ld, 0.0f, dst + (ptrdiff_t)gi * Rg * ld, ld);
                    if (!pointwise)
                        decaf_col2im_serial(dcols, dx + b * plane_in, n, GEOM_ARGS(g));
                }
            }
            #pragma omp barrier
            /* reduce the partial sums, each thread a slice of the elements */
            const ptrdiff_t lo = acc * t / T, hi = acc * (t + 1) / T;
            for (ptrdiff_t i = lo; i < hi; ++i) {
                float s = 0.0f;
                for (int u = 0; u < T; ++u) s += work[u * tw + (tw - acc) + i];
                if (i < wsize) dw[i] = s;
                else if (db) db[i - wsize] = s;
            }
        }
        return;
    }
    float *cols = work, *dcols = work + colsz;
    for (int b = 0; b < g->B; ++b) {   /* fewer images than threads: split every step */
        const float *dyb = dy + b * plane_out;
        const float *src = pointwise ? x + b * plane_in : cols;
        if (!pointwise)
            decaf_im2col(x + b * plane_in, cols, 1, GEOM_ARGS(g));
        for (int gi = 0; gi < g->G; ++gi)
            decaf_sgemm(0, 1, Kg, Rg, (int)hw, 1.0f, dyb + gi * Kg * hw, (int)hw, src + gi * Rg * hw,
                        (int)hw, b == 0 ? 0.0f : 1.0f, dw + (ptrdiff_t)gi * Kg * Rg, Rg);
        if (db)
            channel_sums(dyb, g->K, hw, db, b > 0);
        if (dx) {
            float *dst = pointwise ? dx + b * plane_in : dcols;
            for (int gi = 0; gi < g->G; ++gi)
                decaf_sgemm(1, 0, Rg, (int)hw, Kg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg, dyb + gi * Kg * hw,
                            (int)hw, 0.0f, dst + gi * Rg * hw, (int)hw);
            if (!pointwise)
                decaf_col2im(dcols, dx + b * plane_in, 1, GEOM_ARGS(g));
        }
    }
}
