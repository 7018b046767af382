/* Forward convolution without im2col (AVX-512): see direct_conv.c for the layouts and the
 * micro-kernel. decaf_conv_forward uses it where decaf_direct_conv_supported says so. */
#ifndef DECAF_DIRECT_CONV_H
#define DECAF_DIRECT_CONV_H

#include <stddef.h>

#include "conv.h"

int decaf_direct_conv_supported(const decaf_conv_geom *g);
ptrdiff_t decaf_direct_conv_work_size(const decaf_conv_geom *g, int threads);
void decaf_direct_conv_forward(const decaf_conv_geom *g, const float *x, const float *w, const float *bias,
                               float *y, float *work, float relu, float *relu_out);

#endif
