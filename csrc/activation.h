/* The epilogue the convolution kernels (conv.c, direct_conv.c, depthwise.c) apply as they write
 * their output: the bias, then optionally a residual tensor added, then optionally an activation.
 *
 *     v = conv + bias (+ residual)            y = v
 *     a = act(v)                              in y itself (out NULL) or into out, y keeping v
 *
 * act is one of DECAF_ACT_*:
 *     NONE       a = v
 *     CLAMP      min(max(v, lo), hi)          ReLU (0, inf), ReLU6 (0, 6), Clip
 *     LEAKY      v < 0 ? alpha v : v          LeakyReLU (alpha the slope)
 *     HARDSWISH  v min(max(v + 3, 0), 6) / 6  MobileNetV3
 *     SILU       v sigmoid(alpha v)           EfficientNet, RegNetY (alpha 1)
 *     SIGMOID    1 / (1 + exp(-v))
 *     HARDSIGMOID  min(max(alpha v + lo, 0), hi)   lo the offset (beta), hi 1: MobileNetV3's gates
 *     GELU       v (1 + erf(v / sqrt 2)) / 2  ConvNeXt (exact form)
 * A NaN stays NaN in every one (the clamps are written as selects that compare false on NaN).
 *
 * One function, decaf_epilogue_run, applies it to a contiguous run of one output channel; every
 * kernel calls it on runs it has just written (still in cache). Its loops are written without
 * calls or branches (the exponential below is a polynomial), so that GCC vectorises them in each
 * instruction set variant: 4 lanes in the generic (SSE2) build, 8 with AVX2, 8 or 16 with AVX-512.
 * The scalar remainder of a run is the same code. */
#ifndef DECAF_ACTIVATION_H
#define DECAF_ACTIVATION_H

#include <math.h>   /* INFINITY */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

enum {
    DECAF_ACT_NONE = 0,
    DECAF_ACT_CLAMP = 1,
    DECAF_ACT_LEAKY = 2,
    DECAF_ACT_HARDSWISH = 3,
    DECAF_ACT_SILU = 4,
    DECAF_ACT_SIGMOID = 5,
    DECAF_ACT_HARDSIGMOID = 6,
    DECAF_ACT_GELU = 7,
    DECAF_ACT_COUNT = 8
};

typedef struct {
    int act;                 /* DECAF_ACT_* */
    float lo, hi;            /* CLAMP's bounds; HARDSIGMOID's offset and upper bound */
    float alpha;             /* LEAKY's slope, SILU's and HARDSIGMOID's scale */
    const float *residual;   /* shaped like y: added before the activation (NULL: none) */
    float *out;              /* shaped like y: the activation's output (NULL: in y itself) */
} decaf_epilogue;

/* min(max(v, 0), hi), keeping a NaN, as two selects the compiler turns into maxss / minss (a
 * single nested ?: compiled to branches, which mispredict on real data: conv1 ran 2.4x slower). */
static inline float clamp_relu(float v, float hi)
{
    const float a = v < 0.0f ? 0.0f : v;
    return a > hi ? hi : a;
}

/* The activation loops below are compiled without -ftrapping-math's promise that no floating-point
 * operation runs speculatively: with it GCC keeps a select feeding a multiply or a division as a
 * branch and vectorises none of the loops of SILU, SIGMOID and LEAKY. (decaf reads no floating-point
 * exception flags; the values are the same either way.) A caller compiled with other options calls
 * them rather than inlining them: one call per run of outputs. */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

/* exp(x) within 2 ulp for x in [-87.3, 88.3]; 0 below, +inf above (where exp leaves or nearly
 * leaves the normal floats), so that a sigmoid's tails are exactly 0 and 1 and x / (1 + exp(-x))
 * is -0 for a very negative x. x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial
 * to degree 7 (the remainder below 2e-9 relative), times 2^n built in the exponent bits. NaN gives
 * NaN. No call, no branch. */
static inline float decaf_exp_poly(float x0)
{
    float x = x0 < -87.3f ? -87.3f : x0;
    x = x > 88.3f ? 88.3f : x;
    const float round = 12582912.0f;                         /* 1.5 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504f + round) - round;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;   /* ln2 in two parts (Cody-Waite) */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    n = n == n ? n : 0.0f;                                    /* NaN: any exponent (p is NaN) */
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float e = x0 < -87.3f ? 0.0f : p * scale;
    return x0 > 88.3f ? (float)INFINITY : e;
}

/* d[i] = act(y[i]) for i < n, one function per kind (d may be y). Each loop on its own, so GCC
 * vectorises it (inside one switch it gave up: "control flow in loop"). */
/* min(max(v, lo), hi), a NaN kept: one value (pointwise.c's scalar tails use it too) */
static inline float decaf_clamp(float v, float lo, float hi)
{
    const float a = v < lo ? lo : v;
    return a > hi ? hi : a;
}

static inline void decaf_act_clamp(float *d, const float *y, ptrdiff_t n, float lo, float hi)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        d[i] = decaf_clamp(y[i], lo, hi);
}

static inline void decaf_act_leaky(float *d, const float *y, ptrdiff_t n, float slope)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = y[i];
        d[i] = v * (v < 0.0f ? slope : 1.0f);   /* (a multiply in one branch only would not vectorise) */
    }
}

static inline void decaf_act_hardswish(float *d, const float *y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = y[i], t = v + 3.0f, a = t < 0.0f ? 0.0f : t;
        d[i] = ((a > 6.0f ? 6.0f : a) * v) / 6.0f;
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* decaf_exp_poly on 8 lanes, step for step. Written out because GCC's own vectorisation of the
 * scalar function ran at about 3.6 cycles per value (Zen 3; SiLU was a third of EfficientNet-B0's
 * time at batch 16), these at about 1. The lanes give the scalar code's values up to the
 * contraction of its multiply-adds (which GCC may or may not fuse there): within an ulp. */
static inline __m256 decaf_exp_poly8(__m256 x0)
{
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.3f), round = _mm256_set1_ps(12582912.0f);
    __m256 x = _mm256_min_ps(hi, _mm256_max_ps(lo, x0));   /* (a NaN x0 passes: min/max return it) */
    __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), round), round);
    const __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f),
                                     _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x));
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    n = _mm256_and_ps(n, _mm256_cmp_ps(n, n, _CMP_ORD_Q));                 /* NaN: exponent 0 (p is NaN) */
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    e = _mm256_andnot_ps(_mm256_cmp_ps(x0, lo, _CMP_LT_OQ), e);           /* below: 0 */
    return _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x0, hi, _CMP_GT_OQ));   /* above: inf */
}
#endif

static inline void decaf_act_silu(float *d, const float *y, ptrdiff_t n, float alpha)
{
    ptrdiff_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 minus_alpha = _mm256_set1_ps(-alpha), one = _mm256_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {   /* two vectors at a time: each one's chain is long (the polynomial) */
        const __m256 v0 = _mm256_loadu_ps(y + i), v1 = _mm256_loadu_ps(y + i + 8);
        const __m256 e0 = decaf_exp_poly8(_mm256_mul_ps(minus_alpha, v0));
        const __m256 e1 = decaf_exp_poly8(_mm256_mul_ps(minus_alpha, v1));
        _mm256_storeu_ps(d + i, _mm256_div_ps(v0, _mm256_add_ps(one, e0)));
        _mm256_storeu_ps(d + i + 8, _mm256_div_ps(v1, _mm256_add_ps(one, e1)));
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(y + i);
        _mm256_storeu_ps(d + i, _mm256_div_ps(v, _mm256_add_ps(one, decaf_exp_poly8(_mm256_mul_ps(minus_alpha, v)))));
    }
#endif
    for (; i < n; ++i) {
        const float v = y[i];
        d[i] = v / (1.0f + decaf_exp_poly(-alpha * v));
    }
}

static inline void decaf_act_sigmoid(float *d, const float *y, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(y + i);
        _mm256_storeu_ps(d + i, _mm256_div_ps(one, _mm256_add_ps(one, decaf_exp_poly8(_mm256_sub_ps(zero, v)))));
    }
#endif
    for (; i < n; ++i) {
        const float v = y[i];
        d[i] = 1.0f / (1.0f + decaf_exp_poly(-v));
    }
}

static inline void decaf_act_hardsigmoid(float *d, const float *y, ptrdiff_t n, float alpha, float beta, float hi)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float t = y[i] * alpha + beta, a = t < 0.0f ? 0.0f : t;
        d[i] = a > hi ? hi : a;
    }
}

/* GELU (exact, through erfc): ConvNeXt's activation, applied by the 1x1 convolution before it and by
 * elementwise.c's decaf_gelu. Its own options: multiply-adds fused (the polynomials' chains of
 * dependent steps are what these loops wait for). */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
/* erfc(z) for z >= 0 by the fit above (good to 1.2e-7 relative for every z >= 0; elementwise.c's
 * erf uses it from 0.5 on); 0 for z = inf (t = 0 and the exponential underflows to 0). */
static inline float decaf_erfc_fit(float z)
{
    const float t = 1.0f / (1.0f + 0.5f * z), t2 = t * t, t4 = t2 * t2;
    /* P(t) = -1.26551223 + 1.00002368 t + ... + 0.17087277 t^9 by Estrin's scheme (pairs, then
     * pairs of pairs): a chain of 4 multiply-adds after t^4 where Horner's rule has 9 */
    const float p01 = -1.26551223f + 1.00002368f * t, p23 = 0.37409196f + 0.09678418f * t;
    const float p45 = -0.18628806f + 0.27886807f * t, p67 = -1.13520398f + 1.48851587f * t;
    const float p89 = -0.82215223f + 0.17087277f * t;
    const float q = (p01 + p23 * t2) + (p45 + p67 * t2) * t4 + p89 * (t4 * t4);
    return t * decaf_exp_poly(q - z * z);
}

/* GELU, x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2, from the erfc
 * fit alone: with z = |x| / sqrt 2, Phi = erfc(z) / 2 for x < 0 and 1 - erfc(z) / 2 for x >= 0.
 * The fit holds for every z >= 0 (1.2e-7 relative), so there is no series arm to compute and
 * discard: Phi within about 1e-7 absolute near 0 (GELU(x) = x Phi within 1e-7 |x|, as the series
 * would give it) and within a few 1e-6 relative in the lower tail, where 1 + erf would have
 * cancelled down to erf's absolute error. Once Phi is 0 (x below about -13.2, where x Phi is
 * below 1e-38) the result is -0 directly, so that x = -inf gives -0 rather than -inf times 0;
 * inf gives inf, a NaN NaN (Phi is NaN, not 0). */
static inline float decaf_gelu1(float v)
{
    const float half_tail = 0.5f * decaf_erfc_fit(fabsf(v) * 0.70710678118654752f);
    const float phi = v < 0.0f ? half_tail : 1.0f - half_tail;
    return phi == 0.0f ? -0.0f : v * phi;
}

#if defined(__AVX2__) && defined(__FMA__)
/* decaf_gelu1 on 8 lanes, step for step, with activation.h's decaf_exp_poly8 (GCC's vectorisation of
 * the scalar code ran at about 2 ns a value here, latency-bound on the polynomials' chains). */
static inline __m256 decaf_gelu8(__m256 v)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(0.70710678118654752f));
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), one));
    const __m256 t2 = _mm256_mul_ps(t, t), t4 = _mm256_mul_ps(t2, t2);
    const __m256 p01 = _mm256_fmadd_ps(_mm256_set1_ps(1.00002368f), t, _mm256_set1_ps(-1.26551223f));
    const __m256 p23 = _mm256_fmadd_ps(_mm256_set1_ps(0.09678418f), t, _mm256_set1_ps(0.37409196f));
    const __m256 p45 = _mm256_fmadd_ps(_mm256_set1_ps(0.27886807f), t, _mm256_set1_ps(-0.18628806f));
    const __m256 p67 = _mm256_fmadd_ps(_mm256_set1_ps(1.48851587f), t, _mm256_set1_ps(-1.13520398f));
    const __m256 p89 = _mm256_fmadd_ps(_mm256_set1_ps(0.17087277f), t, _mm256_set1_ps(-0.82215223f));
    const __m256 q = _mm256_add_ps(_mm256_add_ps(_mm256_fmadd_ps(p23, t2, p01),
                                                 _mm256_mul_ps(_mm256_fmadd_ps(p67, t2, p45), t4)),
                                   _mm256_mul_ps(p89, _mm256_mul_ps(t4, t4)));
    const __m256 half_tail = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), t),
                                           decaf_exp_poly8(_mm256_fnmadd_ps(z, z, q)));
    const __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(one, half_tail), half_tail, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    return _mm256_blendv_ps(_mm256_mul_ps(v, phi), _mm256_set1_ps(-0.0f), _mm256_cmp_ps(phi, zero, _CMP_EQ_OQ));
}
#endif

static inline void decaf_act_gelu(float *d, const float *y, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; i + 16 <= n; i += 16) {   /* two vectors at a time: each one's chain is long */
        const __m256 y0 = decaf_gelu8(_mm256_loadu_ps(y + i)), y1 = decaf_gelu8(_mm256_loadu_ps(y + i + 8));
        _mm256_storeu_ps(d + i, y0);
        _mm256_storeu_ps(d + i + 8, y1);
    }
#endif
    for (; i < n; ++i)
        d[i] = decaf_gelu1(y[i]);
}
#pragma GCC pop_options

#pragma GCC pop_options

/* y[0 .. n) of one output channel, just written without the bias: y = y + bias (+ residual[i]);
 * then the activation in y, or into out (y keeping its values). residual and out point at the same
 * elements of their tensors as y does of its own (NULL: none). */
static inline void decaf_epilogue_run(const decaf_epilogue *e, float *y, const float *residual, float *out,
                                      ptrdiff_t n, float bias)
{
    if (residual) {
        for (ptrdiff_t i = 0; i < n; ++i) y[i] = (y[i] + bias) + residual[i];
    } else if (bias != 0.0f) {
        for (ptrdiff_t i = 0; i < n; ++i) y[i] += bias;
    }
    if (!e)
        return;
    float *d = out ? out : y;
    switch (e->act) {
    case DECAF_ACT_CLAMP: decaf_act_clamp(d, y, n, e->lo, e->hi); break;
    case DECAF_ACT_LEAKY: decaf_act_leaky(d, y, n, e->alpha); break;
    case DECAF_ACT_HARDSWISH: decaf_act_hardswish(d, y, n); break;
    case DECAF_ACT_SILU: decaf_act_silu(d, y, n, e->alpha); break;
    case DECAF_ACT_SIGMOID: decaf_act_sigmoid(d, y, n); break;
    case DECAF_ACT_HARDSIGMOID: decaf_act_hardsigmoid(d, y, n, e->alpha, e->lo, e->hi); break;
    case DECAF_ACT_GELU: decaf_act_gelu(d, y, n); break;
    default: break;   /* NONE: y as it is */
    }
}

/* The residual and activation output of an epilogue at offset `at` of the output tensor. */
static inline const float *decaf_epilogue_residual(const decaf_epilogue *e, ptrdiff_t at)
{
    return e && e->residual ? e->residual + at : NULL;
}

static inline float *decaf_epilogue_out(const decaf_epilogue *e, ptrdiff_t at)
{
    return e && e->act != DECAF_ACT_NONE && e->out ? e->out + at : NULL;
}

/* Whether the epilogue is a clamp alone (ReLU, ReLU6), into y itself and with no residual before it:
 * the one that kernels apply in their registers or in their own loops instead of a pass. */
static inline int decaf_epilogue_is_clamp(const decaf_epilogue *e)
{
    return e && e->act == DECAF_ACT_CLAMP && !e->residual && !e->out;
}

/* decaf_epilogue_run on y[at .. at + n) of the output tensor y. */
static inline void decaf_epilogue_at(const decaf_epilogue *e, float *y, ptrdiff_t at, ptrdiff_t n, float bias)
{
    decaf_epilogue_run(e, y + at, decaf_epilogue_residual(e, at), decaf_epilogue_out(e, at), n, bias);
}

#endif
