/* Direct convolution for few input channels (a network's first layer), output pixels in the
 * vector lanes: see stem_conv.c. decaf_conv_forward uses it where decaf_stem_conv_supported says
 * so; the weights are reordered per call (a few hundred floats), so it has no prepacked form. */
#ifndef DECAF_STEM_CONV_H
#define DECAF_STEM_CONV_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "activation.h"
#include "conv.h"

/* 1 for one group, at most 4 input channels, C kh kw < 64, equal strides of 1 or 2, no dilation,
 * kernels from 1x2 up to 7x7 (not 1x1). */
int decaf_stem_conv_supported(const decaf_conv_geom *g);
/* floats of scratch (the reordered weights and one image's split input) */
ptrdiff_t decaf_stem_conv_work_size(const decaf_conv_geom *g);
/* y (B, K, Ho, Wo) = conv(x, w) + bias, then the epilogue ep (NULL: none), on `threads` threads. */
void decaf_stem_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                             const float *bias, float *y, float *work, const decaf_epilogue *ep);

#endif
