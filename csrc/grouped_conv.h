/* Grouped convolution with few channels per group, computed directly (no im2col, no GEMM).
 *
 * x (B, C, H, W), w (K, Cg, kh, kw) with Cg = C/G, bias (K) or NULL, y (B, K, Ho, Wo), Kg = K/G:
 *     y[b, g Kg + k, oh, ow] = bias[g Kg + k]
 *         + sum_{c < Cg, i < kh, j < kw} w[g Kg + k, c, i, j] x[b, g Cg + c, oh sh - pad_top + i, ow sw - pad_left + j]
 * with x taken as 0 outside the image. im2col + one GEMM per group runs such layers (RegNet's
 * group width 8, ResNeXt's 32 groups of 4..32 channels) as many tiny GEMMs at 6-11 GFLOP/s; this
 * kernel keeps a group's padded input planes in cache and runs register tiles of output channels x
 * output pixels over them (grouped_conv.c). Dilation 1 only. */
#ifndef DECAF_GROUPED_CONV_H
#define DECAF_GROUPED_CONV_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "conv.h"   /* decaf_conv_geom, decaf_epilogue */

/* 1 when this kernel handles g: G > 1 groups, not depthwise (C/G == K/G == 1 stays with
 * depthwise.c), dilation 1, any kernel size, stride and padding. 0 in the generic variant (the
 * kernel is written with AVX2 + FMA intrinsics; im2col + GEMM serves that variant). */
int decaf_grouped_conv_supported(const decaf_conv_geom *g);

/* Floats of scratch decaf_grouped_conv_forward needs with `threads` threads (< 1: one). */
ptrdiff_t decaf_grouped_conv_work_size(const decaf_conv_geom *g, int threads);

/* y overwritten with the convolution plus the bias, then the epilogue ep (NULL: none; see
 * activation.h). work: decaf_grouped_conv_work_size(g, threads) floats. The work is split over
 * up to `threads` of decaf's OpenMP threads. ep->residual must not be y. */
void decaf_grouped_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                                const float *bias, float *y, float *work, const decaf_epilogue *ep);

/* The weights in the form the kernel reads (per group, tap-major, the group's output channels
 * side by side), for a caller that runs the same weights many times: packed_size floats, written
 * by pack, read by forward_packed instead of w (decaf_grouped_conv_forward packs w into its work
 * on every call: up to a tenth of its time at batch 1 for ResNeXt's wide layers). The form
 * depends on g's C, K, G, kh, kw and the instruction set variant only. */
ptrdiff_t decaf_grouped_conv_packed_size(const decaf_conv_geom *g);
void decaf_grouped_conv_pack(const decaf_conv_geom *g, const float *w, float *packed);
/* decaf_grouped_conv_forward with the weights packed by decaf_grouped_conv_pack (same work size). */
void decaf_grouped_conv_forward_packed(const decaf_conv_geom *g, int threads, const float *x, const float *packed,
                                       const float *bias, float *y, float *work, const decaf_epilogue *ep);

/* 1 where benchmarks/bench_grouped.py measured this kernel faster than im2col + GEMM per group
 * (decaf_conv_forward's plan) for a geometry like g; 0 where not, or where it is not supported. */
int decaf_grouped_conv_preferred(const decaf_conv_geom *g, int threads);

#endif
