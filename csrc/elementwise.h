/* Whole-array passes that are worth running on all threads. */
#ifndef DECAF_ELEMENTWISE_H
#define DECAF_ELEMENTWISE_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

#include <stddef.h>

/* dst[i] = src[i] for i < n; returns how many of the values are NaN or infinite. */
ptrdiff_t decaf_copy_count_nonfinite(const float *src, float *dst, ptrdiff_t n);

#endif
