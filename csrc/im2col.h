/* im2col / col2im: unroll convolution windows into the columns of a matrix so that a convolution
 * becomes one matrix product, and the adjoint that folds such a matrix back into an image.
 *
 * x is (B, C, H, W); cols is (C*kh*kw, B*Ho*Wo), row (c*kh + i)*kw + j, column b*Ho*Wo + oh*Wo + ow,
 * holding x[b, c, oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw] (0 outside the image). */
#ifndef DECAF_IM2COL_H
#define DECAF_IM2COL_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

void decaf_im2col(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                  int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo);

/* Zeroes x, then adds every entry of cols into the pixel it was copied from (padding is dropped). */
void decaf_col2im(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                  int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo);

/* Row r of cols only, on the calling thread (for loops that share one im2col between threads). */
void decaf_im2col_row(const float *x, float *cols, int r, int B, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo);

/* The same on the calling thread only (for code that already runs one image per thread). */
void decaf_im2col_serial(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                         int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo);
void decaf_col2im_serial(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                         int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo);

/* buf (Hp x Wp) = the H x W plane xp placed at (pad_top, pad_left) in zeros, clipped to Hp x Wp:
 * for kernels that read a padded plane with plain loads (depthwise, the direct convolution). */
void decaf_pad_plane(const float *xp, int H, int W, int pad_top, int pad_left, float *buf, int Hp, int Wp);

/* The outputs o in [*lo, *hi) whose input index o*stride + offset lies in [0, size), clipped to
 * [0, n_out). `offset` is (kernel offset)*dilation - pad. Used by im2col and depthwise conv so their
 * inner loops need no bounds test. */
static inline void decaf_valid_outputs(int offset, int stride, int size, int n_out, int *lo, int *hi)
{
    /* First o with o*stride + offset >= 0: ceil(-offset / stride) when offset < 0, written with
     * positive operands because C division truncates toward zero. */
    int l = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    /* One past the last o with o*stride + offset <= size - 1. */
    int h = size - 1 - offset < 0 ? 0 : (size - 1 - offset) / stride + 1;
    if (h > n_out) h = n_out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

#endif
