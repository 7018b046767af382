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

/* A memory-bound pass (3 arrays read, 2 written): threads from 64k values on. */
void decaf_sgd_step(float *restrict w, float *restrict v, const float *restrict g, ptrdiff_t n, float lr, float mu,
                    float decay, float scale, int nesterov)
{
    const float ahead = 1.0f + mu;
    #pragma omp parallel for simd schedule(static) num_threads(decaf_threads_for(n / 4))
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float step = scale * g[i] + decay * w[i];
        const float old = v[i], now = mu * old + lr * step;
        v[i] = now;
        w[i] -= nesterov ? ahead * now - mu * old : now;
    }
}
