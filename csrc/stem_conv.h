/* The stem convolution, forward, computed directly: few input channels (C <= 4), a 3x3, 5x5 or 7x7
 * kernel, stride 1 or 2, one group (MobileNetV2/V3, EfficientNet, RegNet: 3x3, 3 -> 16..32
 * channels, 224x224 -> 112x112; ResNet, GoogLeNet, DenseNet: 7x7, 3 -> 64), with no im2col and no
 * BLAS (csrc/stem_conv.c). */
#ifndef DECAF_STEM_CONV_H
#define DECAF_STEM_CONV_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "conv.h"   /* decaf_conv_geom, decaf_epilogue */

/* 1 when this kernel computes g: one group, 1 <= C <= 4, kernel 3x3, 5x5 or 7x7, undilated, stride
 * 1 or 2 (the same both ways), padding 0 to kernel - 1 on the top and left (the bottom and right
 * ones follow from Ho, Wo). */
int decaf_stem_conv_supported(const decaf_conv_geom *g);

/* 1 where benchmarks/bench_stem.py measured it faster than the other kernels (see stem_conv.c: 3x3
 * and 7x7 with K <= 64, AVX2 / AVX-512 variants); 0 in the generic variant. The environment variable DECAF_STEM_CONV, read
 * here and by the forward, overrides that for benchmarks and tests: "off" never, "on" wherever it
 * is supported (the generic variant too), "stream" as "on" with the stores streamed. */
int decaf_stem_conv_preferred(const decaf_conv_geom *g, int threads);

/* Floats of scratch decaf_stem_conv_forward needs with `threads` threads: the weights and bias in
 * blocks of 4 output channels, then per thread a ring of split input rows and a padded row. */
ptrdiff_t decaf_stem_conv_work_size(const decaf_conv_geom *g, int threads);

/* y (B, K, Ho, Wo) overwritten with the convolution of x (B, C, H, W) by w (K, C, KS, KS) plus bias
 * (NULL: none), then the epilogue ep (NULL: none; ep->residual must not be y). `threads` decaf
 * threads (< 1: one); work: decaf_stem_conv_work_size floats. */
void decaf_stem_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *bias, float *y, float *work, const decaf_epilogue *ep);

#endif
