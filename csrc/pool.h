/* Max and average pooling over (B, C, H, W) images into (B, C, Ho, Wo) outputs.
 *
 * The window of output (oh, ow) starts at (oh*sh - pad_top, ow*sw - pad_left) and is kh x kw.
 * Ho and Wo are chosen by the caller (floor or ceil mode); windows are clipped here. */
#ifndef DECAF_POOL_H
#define DECAF_POOL_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

/* argmax[b, c, oh, ow] = h*W + w of the window's maximum, the first one in row-major order on
 * ties; only real pixels are candidates. A window with no real pixel gives -inf and argmax -1. */
void decaf_max_pool_forward(const float *x, float *y, int *argmax, int B, int C, int H, int W,
                            int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left);

/* The same maxima without argmax, for inference: with AVX-512, 16 outputs of a row at once for
 * strides 1 and 2. A NaN anywhere in a window gives NaN. */
void decaf_max_pool_values(const float *x, float *y, int B, int C, int H, int W,
                           int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left);

/* Zeroes dx, then dx[b, c].flat[argmax] += dy (entries with argmax outside [0, H*W) are skipped). */
void decaf_max_pool_backward(const float *dy, const int *argmax, float *dx, int B, int C, int H, int W,
                             int Ho, int Wo);

/* The sum over the window's real pixels, divided by the window clipped to the padded image
 * (count_include_pad, as Caffe and PyTorch) or by the number of real pixels. An empty divisor gives 0. */
void decaf_avg_pool_forward(const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,
                            int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                            int pad_bottom, int pad_right, int count_include_pad);

/* The adjoint of decaf_avg_pool_forward: zeroes dx, then spreads dy / divisor over each window. */
void decaf_avg_pool_backward(const float *dy, float *dx, int B, int C, int H, int W, int Ho, int Wo,
                             int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                             int pad_bottom, int pad_right, int count_include_pad);

#endif
