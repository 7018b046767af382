/* BatchNorm with batch statistics (the train phase): forward and backward, each over one tensor.
 *
 * x, y, dy, dx (B, C, HW) contiguous float32 (a (B, C) input is HW 1); m = B HW values per channel.
 *
 * Forward:
 *     mean[c] = sum(x[:, c]) / m,   var[c] = sum((x[:, c] - mean[c])^2) / m   (biased)
 *     y = (x - mean[c]) inv_std[c] gamma[c] + beta[c],   inv_std = 1 / sqrt(var + eps)
 * gamma NULL: 1, beta NULL: 0 (BatchNorm without affine). Then the epilogue ep (activation.h; NULL:
 * none): its activation in y, or into ep->out (y keeping the values before it).
 *
 * Backward, with mean and var those of the forward (xhat = (x - mean) inv_std recomputed from x):
 *     dbeta[c] = sum(dy[:, c]),   dgamma[c] = sum(dy[:, c] xhat[:, c])
 *     dx = gamma inv_std (dy - dbeta / m - xhat dgamma / m)
 * dx NULL: not computed (no gradient wanted below); dgamma and dbeta NULL together: not written
 * (no affine). */
#ifndef DECAF_BATCHNORM_H
#define DECAF_BATCHNORM_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "activation.h"   /* decaf_epilogue */

/* y must not overlap x; ep->out may be y, else it overlaps neither. mean and var (C) are written.
 * Parallel over channels with decaf's threads when the tensor is large enough (threads.h). */
void decaf_batchnorm_train_forward(const float *x, const float *gamma, const float *beta, float *y,
                                   float *mean, float *var, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                                   const decaf_epilogue *ep);

/* dx must not overlap x or dy. */
void decaf_batchnorm_train_backward(const float *x, const float *dy, const float *mean, const float *var,
                                    const float *gamma, float *dx, float *dgamma, float *dbeta, ptrdiff_t B,
                                    ptrdiff_t C, ptrdiff_t HW, float eps);

#endif
