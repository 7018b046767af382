/* Local response normalisation across channels (Caffe ACROSS_CHANNELS, ONNX LRN).
 *
 * For (B, C, H, W) arrays, with n = local_size and the window of channel c being
 * [c - (n-1)/2, c + n/2] clipped to [0, C):
 *     scale[c] = k + (alpha / n) * sum over the window of x^2,    y[c] = x[c] * scale[c]^-beta.
 * scale is kept for the backward pass. Outputs must not alias inputs. */
#ifndef DECAF_LRN_H
#define DECAF_LRN_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

void decaf_lrn_forward(const float *x, float *y, float *scale, int B, int C, int HW,
                       int local_size, float alpha, float beta, float k);

/* dx[c] = dy[c] * scale[c]^-beta
 *         - (2 alpha beta / n) * x[c] * sum over c' whose window contains c of dy[c'] y[c'] / scale[c'].
 * The c' whose window contains c are [c - n/2, c + (n-1)/2]: the forward window mirrored. */
void decaf_lrn_backward(const float *x, const float *y, const float *scale, const float *dy, float *dx,
                        int B, int C, int HW, int local_size, float alpha, float beta);

#endif
