#include "elementwise.h"

#include <math.h>

#include "threads.h"

ptrdiff_t decaf_copy_count_nonfinite(const float *restrict src, float *restrict dst, ptrdiff_t n)
{
    ptrdiff_t bad = 0;
    #pragma omp parallel for simd schedule(static) reduction(+ : bad) num_threads(decaf_threads_for(n / 4))
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = src[i];
        dst[i] = v;
        bad += !isfinite(v);
    }
    return bad;
}
