/* 1x1 convolution (stride 1, no padding, one group), forward, computed directly on the NCHW planes:
 * per image, y (K, P) = w (K, C) x (C, P) with P = H W, plus the bias and decaf's epilogue, with no
 * im2col and no BLAS (csrc/pointwise.c). */
#ifndef DECAF_POINTWISE_H
#define DECAF_POINTWISE_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "conv.h"   /* decaf_conv_geom, decaf_epilogue */

/* 1 when g is a 1x1 convolution this kernel computes: kernel 1x1, stride 1, no padding, one group. */
int decaf_pointwise_supported(const decaf_conv_geom *g);

/* 1 where benchmarks/bench_pointwise.py measured this kernel faster than the OpenBLAS GEMM per
 * image (see pointwise.c); 0 in the generic variant and where it is not supported. */
int decaf_pointwise_preferred(const decaf_conv_geom *g, int threads);

/* Floats of the packed weights: ceil(K / 6) blocks of C x 6 (the output channels zero-padded). */
ptrdiff_t decaf_pointwise_packed_size(const decaf_conv_geom *g);
/* packed = w (K, C) in that form: packed[kb][c][r] = w[6 kb + r][c] (0 past K). */
void decaf_pointwise_pack(const decaf_conv_geom *g, const float *w, float *packed);

/* Floats of scratch decaf_pointwise_forward needs (0 today; work may then be NULL). */
ptrdiff_t decaf_pointwise_work_size(const decaf_conv_geom *g);

/* y (B, K, H, W) overwritten with the convolution of x (B, C, H, W) by w (K, C, 1, 1) plus bias (NULL:
 * none), then the epilogue ep (NULL: none; ep->residual must not be y). packed: the weights from
 * decaf_pointwise_pack, or NULL (then w is read as it is: 6 rows of C weights at a time; the packed
 * form, 6 weights side by side, lets a tile of fewer than 8 pixels take the 6 channels in the lanes).
 * `threads` decaf threads (< 1: one). */
void decaf_pointwise_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *packed, const float *bias, float *y, float *work,
                             const decaf_epilogue *ep);

#endif
