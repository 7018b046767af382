/* Winograd F(4x4, 3x3) convolution: 3x3, stride 1, dilation 1, one group (see winograd.c).
 *
 * The weights are transformed once (decaf_winograd_pack) into U, 36 matrices of (K, C); each forward
 * transforms 6x6 input tiles, runs 36 GEMMs and transforms the products back into 4x4 output tiles,
 * applying the bias and the epilogue (activation.h) as it writes y (B, K, Ho, Wo). The caller gives
 * the scratch space: decaf_winograd_work_size floats. */
#ifndef DECAF_WINOGRAD_H
#define DECAF_WINOGRAD_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "activation.h"   /* decaf_epilogue */
#include "conv.h"         /* decaf_conv_geom */

/* 1 for 3x3, stride 1, dilation 1, one group (any padding, any C, K, H, W >= 1). */
int decaf_winograd_supported(const decaf_conv_geom *g);
/* floats of the transformed weights U */
ptrdiff_t decaf_winograd_packed_size(const decaf_conv_geom *g);
/* U = the weight transform of w (K, C, 3, 3), done once per weight change by the caller */
void decaf_winograd_pack(const decaf_conv_geom *g, const float *w, float *u);
/* floats of scratch decaf_winograd_forward needs with `threads` threads */
ptrdiff_t decaf_winograd_work_size(const decaf_conv_geom *g, int threads);
/* y (B, K, Ho, Wo) = conv(x, w) + bias, then the epilogue ep (NULL: none), from U. ep->residual must
 * not be y. */
void decaf_winograd_forward(const decaf_conv_geom *g, int threads, const float *x, const float *u,
                            const float *bias, float *y, float *work, const decaf_epilogue *ep);
/* 1 when Winograd should be picked over the direct / im2col path for this shape and thread count
 * (a heuristic from benchmarks/bench_winograd.py: see winograd.c); 0 where it is not supported. */
int decaf_winograd_preferred(const decaf_conv_geom *g, int threads);
/* floats of scratch decaf_winograd_weight_grad needs (any thread count) */
ptrdiff_t decaf_winograd_weight_grad_work_size(const decaf_conv_geom *g);
/* dw (K, C, 3, 3) and db (K; NULL: none) overwritten with the gradients of the convolution for the
 * output gradient dy (B, K, Ho, Wo), summed over the batch, by the transposed Winograd transforms. */
void decaf_winograd_weight_grad(const decaf_conv_geom *g, int threads, const float *x, const float *dy, float *dw,
                                float *db, float *work);

#endif
