/* A per-channel affine map with the activation epilogue: BatchNorm at inference, Scale, and Mul /
 * Add by per-channel constants, each one pass over the tensor.
 *
 * x, y (B, C, HW), scale and shift (C; shift NULL: 0):
 *     y[b, c, i] = x[b, c, i] * scale[c] + shift[c]
 * y is contiguous; each image of x is, its images x_image floats apart (C HW when x is contiguous;
 * more when x is a run of channels of a wider tensor, e.g. a DenseNet concatenation's prefix).
 * then the epilogue ep (activation.h; NULL: none): its activation in y, or into ep->out (y keeping
 * the values before it); ep->residual, when given, is added before the activation. */
#ifndef DECAF_CHANNEL_AFFINE_H
#define DECAF_CHANNEL_AFFINE_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "activation.h"   /* decaf_epilogue */

/* y may be x (in place, x_image = C HW); ep->out may be x or y, else it overlaps neither. Parallel
 * over the (image, channel) planes with decaf's threads when the tensor is large enough (threads.h). */
void decaf_channel_affine(const float *x, ptrdiff_t x_image, const float *scale, const float *shift, float *y,
                          ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const decaf_epilogue *ep);

#endif
