/* Forward convolution without im2col (AVX-512 and AVX2 variants): see direct_conv.c for the layouts and the
 * micro-kernel. decaf_conv_forward uses it where decaf_direct_conv_supported says so. */
#ifndef DECAF_DIRECT_CONV_H
#define DECAF_DIRECT_CONV_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

#include "conv.h"

int decaf_direct_conv_supported(const decaf_conv_geom *g);
/* The scratch of a direct plan (p->threads, p->by_image set): packed weights, then one packed
 * image per slot (p->slot floats; a slot per thread when by_image, else one shared image). Sets
 * p->slot, p->slots and p->work. */
void decaf_direct_conv_scratch(const decaf_conv_geom *g, decaf_conv_plan *p);
/* packed: the weights as decaf_direct_conv_pack wrote them, or NULL (packed into work first). */
void decaf_direct_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                               const float *packed, const float *bias, float *y, float *work,
                               const decaf_epilogue *ep);
/* Floats of the packed weights, and the packing itself, with p->threads threads. */
ptrdiff_t decaf_direct_conv_packed_size(const decaf_conv_geom *g);
void decaf_direct_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *wp);

#endif
