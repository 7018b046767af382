/* The mean of a plane of contiguous floats, in a fixed order of sums (below), shared by global
 * average pooling (pool.c) and the depthwise convolution that computes its output's channel means
 * as it writes them (depthwise.c): the two give the same floats. */
#ifndef DECAF_PLANE_MEAN_H
#define DECAF_PLANE_MEAN_H

#include <stddef.h>
#include <stdint.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* The mean of n contiguous floats in 16 running sums (element i into sum i % 16), added pairwise at
 * the end: one sum in order waits for each add (4 cycles) and does not vectorise; these do. */
#ifdef __AVX2__
/* The same sums in two 8-lane registers (sums 0-7 and 8-15), the last n % 16 floats through masked
 * loads, the pairwise adds in the same order: the same result as the loop below, at about a third
 * of its time on squeeze-excitation planes (7x7 to 56x56), where the loop's per-plane tail and
 * reduction cost more than its sums. */
static inline float decaf_plane_mean(const float *p, ptrdiff_t n)
{
    static const int32_t lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(p + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(p + i + 8));
    }
    const int left = (int)(n - i);   /* 0..15: lanes 0..left-1 of a, then of b */
    if (left) {
        /* lanes + 8 - k: k ones then zeros (k = 1..8) */
        const int ka = left < 8 ? left : 8, kb = left - ka;
        a = _mm256_add_ps(a, _mm256_maskload_ps(p + i, _mm256_loadu_si256((const __m256i *)(lanes + 8 - ka))));
        if (kb)
            b = _mm256_add_ps(b, _mm256_maskload_ps(p + i + 8, _mm256_loadu_si256((const __m256i *)(lanes + 8 - kb))));
    }
    a = _mm256_add_ps(a, b);                                                       /* s[l] += s[l + 8] */
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));  /* s[l] += s[l + 4] */
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));                                        /* s[l] += s[l + 2] */
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));                                    /* s[0] += s[1] */
    return _mm_cvtss_f32(q) / (float)n;
}
#else
static inline float decaf_plane_mean(const float *p, ptrdiff_t n)
{
    float s[16] = {0};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; ++l) s[l] += p[i + l];
    for (int l = 0; i < n; ++i, ++l) s[l] += p[i];
    for (int half = 8; half >= 1; half /= 2)
        for (int l = 0; l < half; ++l) s[l] += s[l + half];
    return s[0] / (float)n;
}
#endif

#endif
