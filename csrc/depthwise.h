/* Depthwise convolution: channel c of x convolved (cross-correlated) with its own kh x kw filter.
 *
 * x (B, C, H, W), w (C, 1, kh, kw), y (B, C, Ho, Wo), no bias:
 *     y[b, c, oh, ow] = sum_ij w[c, 0, i, j] * x[b, c, oh*sh - pad_top + i*dil_h, ow*sw - pad_left + j*dil_w]
 * with x taken as 0 outside the image. */
#ifndef DECAF_DEPTHWISE_H
#define DECAF_DEPTHWISE_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include "activation.h"   /* decaf_epilogue */

/* y = the convolution, + bias[c] (NULL: none), then the epilogue ep (NULL: none; activation.h).
 * ep->residual must not be y (a plane is written before its epilogue reads the residual).
 * means (NULL: none): means[b C + c] = the mean of output plane (b, c) after the epilogue (of the
 * activation's output when ep->out), summed as global average pooling sums (plane_mean.h): the
 * same floats as pooling the output afterwards (a squeeze-excitation block's pooling, done while
 * each plane is still in the cache). */
void decaf_depthwise_conv_forward(const float *x, const float *w, const float *bias, float *y, int B, int C,
                                  int H, int W, int kh, int kw, int Ho, int Wo, int sh, int sw, int pad_top,
                                  int pad_left, int dil_h, int dil_w, const decaf_epilogue *ep, float *means);

/* dx (zeroed, then filled) and dw (overwritten with the gradient summed over the batch);
 * either may be NULL to skip it. */
void decaf_depthwise_conv_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                                   int B, int C, int H, int W, int kh, int kw, int Ho, int Wo,
                                   int sh, int sw, int pad_top, int pad_left, int dil_h, int dil_w);

#endif
