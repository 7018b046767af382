/* Convolution forward and backward, with decaf's threads over images.
 *
 * x (B, C, H, W), w (K, C/G, kh, kw), bias (K) or NULL, y (B, K, Ho, Wo); rows = C*kh*kw,
 * hw = Ho*Wo. Per image b and group g (Kg = K/G output channels, Rg = rows/G rows of cols):
 *     cols = im2col(x[b]);   y[b]_g = w_g cols_g + bias_g
 *     dw_g += dy[b]_g cols_g^T;   db += sum over pixels of dy[b];   dx[b] = col2im(w_g^T dy[b]_g)
 * The forward of most layers with 32k outputs per group runs without im2col instead
 * (direct_conv.c). With B >= threads, each thread takes a contiguous range of images (its own
 * im2col buffer, single-threaded GEMMs, its own dw partial sum, reduced at the end), so the cores
 * never wait on each other inside a layer. With fewer images, each image is split (see
 * decaf_conv_forward). Which of these runs, and the scratch it needs, is decided once, by
 * decaf_conv_make_plan: the caller sizes `work` from the plan and passes the same plan to the
 * forward or backward. */
#ifndef DECAF_CONV_H
#define DECAF_CONV_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "activation.h"   /* decaf_epilogue */

typedef struct {
    int B, C, H, W;          /* input */
    int K, G;                /* output channels, groups */
    int kh, kw, sh, sw, pad_top, pad_left, dh, dw;
    int Ho, Wo;
} decaf_conv_geom;

/* How the few-images forward splits one image over the threads (see decaf_conv_forward). */
typedef enum {
    DECAF_SPLIT_GROUPS = 0,   /* whole groups per thread: the groups divide evenly */
    DECAF_SPLIT_ROWS = 1,     /* a band of output rows per thread: a wide image */
    DECAF_SPLIT_CHANNELS = 2  /* one shared im2col, a slice of the output channels per thread */
} decaf_conv_split;

/* The work partitioning of one convolution call: made once by decaf_conv_make_plan, then used to
 * size the scratch space and by the forward / backward that runs in it. */
typedef struct {
    int isa;                  /* the instruction set variant that made it, and runs it (isa.h) */
    int threads;              /* the team the work is cut for (>= 1) */
    int backward;             /* planned for decaf_conv_backward (else decaf_conv_forward) */
    int direct;               /* forward without im2col (direct_conv.c) */
    int winograd;             /* forward by Winograd F(4x4, 3x3) from prepacked weights (winograd.c) */
    int grouped;              /* forward by the direct grouped kernel (grouped_conv.c) */
    int pointwise;            /* forward of a 1x1 convolution by the direct kernel (pointwise.c) */
    int stem;                 /* forward of a few-channel 3x3 stem convolution, direct (stem_conv.c) */
    int by_image;             /* B >= threads: each thread a contiguous range of whole images;
                               * else every image is split over the threads */
    decaf_conv_split split;   /* how an image is split (forward, !by_image, !direct) */
    int block;                /* images per GEMM block of a thread (1 unless by_image) */
    ptrdiff_t cols;           /* floats of one im2col buffer (0 for a pointwise convolution) */
    ptrdiff_t partial;        /* floats of a thread's dw + db partial sums (backward, by_image) */
    ptrdiff_t slot;           /* floats of scratch per slot; slot s starts at work + s * slot */
    int slots;                /* scratch slots: one per thread, or one shared */
    ptrdiff_t work;           /* floats of scratch in all: the size `work` must have */
    int pack;                 /* the weights' prepacked form this plan reads (DECAF_PACK_*) */
    ptrdiff_t packed;         /* its floats (0 with DECAF_PACK_NONE) */
} decaf_conv_plan;

/* What decaf_conv_pack writes for a plan: nothing (im2col + GEMM reads w as it is), the direct
 * kernel's blocked weights (direct_conv.c), the grouped kernel's (grouped_conv.c), or Winograd's transformed ones (winograd.c: only in a
 * DECAF_PLAN_PREPACKED plan, since the transform costs more than a batch-1 forward). A caller that runs the same weights many times packs
 * them once and hands them to every forward, which then skips that copy (at batch 1 it was up to
 * a third of a layer's time: ResNet-18's 512-channel layers read 9.4 MB of weights per call). */
enum { DECAF_PACK_NONE = 0, DECAF_PACK_DIRECT = 1, DECAF_PACK_WINOGRAD = 2, DECAF_PACK_GROUPED = 3,
       DECAF_PACK_POINTWISE = 4 /* pointwise.c: blocks of 6 output channels */ };

/* What a plan is for: the forward (packing the weights itself where its kernel wants them packed),
 * the backward, the forward of a caller that hands it the weights prepacked (decaf_conv_pack),
 * which may choose kernels whose packing only pays when done once (Winograd's transform), or the
 * backward's weight and bias gradients alone (dx NULL: the caller computes it, e.g. as a forward
 * convolution of dy), which may run by Winograd. */
enum { DECAF_PLAN_FORWARD = 0, DECAF_PLAN_BACKWARD = 1, DECAF_PLAN_PREPACKED = 2, DECAF_PLAN_WEIGHT_GRAD = 3 };

/* The plan for `threads` threads (< 1: one) for `mode` (DECAF_PLAN_*). */
decaf_conv_plan decaf_conv_make_plan(const decaf_conv_geom *g, int threads, int mode);

/* y overwritten with the convolution plus the bias, then the epilogue ep (NULL: none; see
 * activation.h): a residual added, an activation in y or into ep->out. ep->residual must not be
 * y (the GEMMs write y before the epilogue reads the residual). */
void decaf_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                        const float *packed, const float *bias, float *y, float *work, const decaf_epilogue *ep);
/* packed (p->packed floats) = w in the form p->pack says, for decaf_conv_forward's `packed`
 * argument (NULL there: the forward packs w into its scratch itself). Nothing for DECAF_PACK_NONE. */
void decaf_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *packed);

/* dw and db (NULL: no bias) overwritten with sums over the batch; dx (NULL: not wanted) overwritten.
 * p is a backward plan (DECAF_PLAN_WEIGHT_GRAD: dx must be NULL). */
void decaf_conv_backward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db, float *work);

#endif
