/* LayerNorm over one axis: the statistics of each vector of C values x[o, :, i]. */
#ifndef DECAF_LAYERNORM_H
#define DECAF_LAYERNORM_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

/* x and y are (outer, C, inner), C-contiguous (y may be x, not overlap it otherwise); gamma, beta
 * (C,); mean, inv_std (outer, inner). For each (o, i), over c < C:
 *     mean = sum(x[o, c, i]) / C,  var = sum((x[o, c, i] - mean)^2) / C   (biased)
 *     inv_std = 1 / sqrt(var + eps),  y[o, c, i] = (x[o, c, i] - mean) inv_std gamma[c] + beta[c]
 * mean and inv_std are written for backward. inner = H W is a LayerNorm over the channels of NCHW
 * (ConvNeXt's), inner = 1 over rows of C values. C >= 1. */
void decaf_layernorm(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *inv_std,
                     ptrdiff_t outer, ptrdiff_t C, ptrdiff_t inner, float eps);

#endif
