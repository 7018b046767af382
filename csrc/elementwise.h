/* Whole-array passes that are worth running on all threads. */
#ifndef DECAF_ELEMENTWISE_H
#define DECAF_ELEMENTWISE_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

/* dst[i] = src[i] for i < n; returns how many of the values are NaN or infinite. */
ptrdiff_t decaf_copy_count_nonfinite(const float *src, float *dst, ptrdiff_t n);

/* One SGD step with momentum on n values (decaf/solvers/sgd.py), g left as it is:
 *   g' = scale g + decay w;  v_new = mu v + lr g';  w -= v_new   (nesterov: w -= (1 + mu) v_new - mu v) */
void decaf_sgd_step(float *w, float *v, const float *g, ptrdiff_t n, float lr, float mu, float decay, float scale,
                    int nesterov);

/* y[b][n][m] = x[b][m][n] for B matrices of M x N (y's N x M): the channels-last <-> channels-first
 * transposes of ConvNeXt-style nets ((B, C, HW) <-> (B, HW, C)). Tiles of 32 x 32, so that the
 * rows read and the columns written both stay in L1; threads over (matrix, band of rows). */
void decaf_transpose(const float *x, float *y, ptrdiff_t B, ptrdiff_t M, ptrdiff_t N);

/* y[i] = erf(x[i]) for i < n (y may be x), within 2.5e-7 relative for |x| < 0.5 and 2.5e-7 absolute
 * elsewhere (see elementwise.c); a NaN stays NaN. */
void decaf_erf(const float *x, float *y, ptrdiff_t n);

/* y[i] = GELU(x[i]) = x[i] (1 + erf(x[i] / sqrt 2)) / 2 for i < n (y may be x), within 3e-7 max(1, |x|)
 * absolute (see elementwise.c); GELU(inf) = inf, GELU(-inf) = -0, a NaN stays NaN. */
void decaf_gelu(const float *x, float *y, ptrdiff_t n);

#endif
