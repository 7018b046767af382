/* Convolution forward and backward, with decaf's threads over images.
 *
 * x (B, C, H, W), w (K, C/G, kh, kw), bias (K) or NULL, y (B, K, Ho, Wo); rows = C*kh*kw,
 * hw = Ho*Wo. Per image b and group g (Kg = K/G output channels, Rg = rows/G rows of cols):
 *     cols = im2col(x[b]);   y[b]_g = w_g cols_g + bias_g
 *     dw_g += dy[b]_g cols_g^T;   db += sum over pixels of dy[b];   dx[b] = col2im(w_g^T dy[b]_g)
 * The forward of most layers with 32k outputs per group runs without im2col instead
 * (direct_conv.c). With B >= threads, each thread takes a contiguous range of images (its own
 * im2col buffer, single-threaded GEMMs, its own dw partial sum, reduced at the end), so the cores
 * never wait on each other inside a layer. With fewer images, each image is split (see
 * decaf_conv_forward). */
#ifndef DECAF_CONV_H
#define DECAF_CONV_H

#include <stddef.h>

typedef struct {
    int B, C, H, W;          /* input */
    int K, G;                /* output channels, groups */
    int kh, kw, sh, sw, pad_top, pad_left, dh, dw;
    int Ho, Wo;
} decaf_conv_geom;

/* Floats of scratch space conv_forward / conv_backward need with `threads` threads. */
ptrdiff_t decaf_conv_work_size(const decaf_conv_geom *g, int threads, int backward);

/* y overwritten. relu > 0 applies an activation after the bias, min(max(., 0), relu): a ReLU for
 * relu = INFINITY, a ReLU6 for 6 (0: none). In y itself when relu_out is NULL, else into
 * relu_out (shaped like y), y keeping the values before it. */
void decaf_conv_forward(const decaf_conv_geom *g, const float *x, const float *w, const float *bias,
                        float *y, float *work, float relu, float *relu_out);

/* dw and db (NULL: no bias) overwritten with sums over the batch; dx (NULL: not wanted) overwritten. */
void decaf_conv_backward(const decaf_conv_geom *g, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db, float *work);

#endif
