/* The public kernel entry points: each calls the instruction set variant in use (see isa.h).
 *
 * The variants are chosen from a table of function pointers, one table per variant built. The
 * CPU's support comes from GCC's __builtin_cpu_supports, which reads CPUID and, for AVX and
 * AVX-512, also asks the OS (XGETBV) whether it saves the ymm / zmm registers. Compiled once, for
 * the x86-64 baseline, like the Cython wrapper that calls it. setup.py says which variants it
 * built with DECAF_BUILT_AVX2 / DECAF_BUILT_AVX512 (x86-64 only; elsewhere only the generic one). */
#include "batchnorm.h"
#include "channel_affine.h"
#include "conv.h"
#include "depthwise.h"
#include "elementwise.h"
#include "gemm.h"
#include "grouped_conv.h"
#include "pointwise.h"
#include "im2col.h"
#include "isa.h"
#include "layernorm.h"
#include "lrn.h"
#include "pool.h"
#include "winograd.h"

#include <stddef.h>

/* The entry points called from outside the kernels, as (return type, name, parameters,
 * arguments); R for those that return a value, V for void ones. The convolution's three are
 * written out below (a plan keeps its variant), the others forward to the variant in use. */
#define CONV_ENTRY_POINTS(R, V)                                                                         \
    R(decaf_conv_plan, decaf_conv_make_plan, (const decaf_conv_geom *g, int threads, int mode),         \
      (g, threads, mode))                                                                           \
    V(decaf_conv_forward, (const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x,          \
                           const float *w, const float *packed, const float *bias, float *y,            \
                           float *work, const decaf_epilogue *ep),                                      \
      (g, p, x, w, packed, bias, y, work, ep))                                                          \
    V(decaf_conv_pack, (const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w,             \
                        float *packed),                                                                 \
      (g, p, w, packed))                                                                                \
    V(decaf_conv_backward, (const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x,         \
                            const float *w, const float *dy, float *dx, float *dw, float *db,           \
                            float *work),                                                               \
      (g, p, x, w, dy, dx, dw, db, work))

#define ENTRY_POINTS(R, V)                                                                              \
    V(decaf_channel_affine, (const float *x, ptrdiff_t x_image, const float *scale, const float *shift,  \
                             float *y, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const decaf_epilogue *ep), \
      (x, x_image, scale, shift, y, B, C, HW, ep))                                                      \
    V(decaf_batchnorm_train_forward, (const float *x, const float *gamma, const float *beta, float *y,  \
                                      float *mean, float *var, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW,  \
                                      float eps, const decaf_epilogue *ep),                             \
      (x, gamma, beta, y, mean, var, B, C, HW, eps, ep))                                                \
    V(decaf_batchnorm_train_backward, (const float *x, const float *dy, const float *mean,              \
                                       const float *var, const float *gamma, float *dx, float *dgamma,  \
                                       float *dbeta, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps), \
      (x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps))                                      \
    V(decaf_im2col, (const float *x, float *cols, int B, int C, int H, int W, int kh, int kw, int sh,   \
                     int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo),                \
      (x, cols, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo))                         \
    V(decaf_col2im, (const float *cols, float *x, int B, int C, int H, int W, int kh, int kw, int sh,   \
                     int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo),                \
      (cols, x, B, C, H, W, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo))                         \
    V(decaf_sgemm, (int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,         \
                    int lda, const float *B, int ldb, float beta, float *C, int ldc),                   \
      (trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))                                 \
    V(decaf_max_pool_forward, (const float *x, float *y, int *argmax, int B, int C, int H, int W,       \
                               int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top,             \
                               int pad_left),                                                           \
      (x, y, argmax, B, C, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left))                            \
    V(decaf_max_pool_values, (const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,     \
                              int kh, int kw, int sh, int sw, int pad_top, int pad_left),               \
      (x, y, B, C, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left))                                    \
    V(decaf_max_pool_backward, (const float *dy, const int *argmax, float *dx, int B, int C, int H,     \
                                int W, int Ho, int Wo),                                                 \
      (dy, argmax, dx, B, C, H, W, Ho, Wo))                                                             \
    V(decaf_avg_pool_forward, (const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,    \
                               int kh, int kw, int sh, int sw, int pad_top, int pad_left,               \
                               int pad_bottom, int pad_right, int count_include_pad),                   \
      (x, y, B, C, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right,              \
       count_include_pad))                                                                              \
    V(decaf_avg_pool_backward, (const float *dy, float *dx, int B, int C, int H, int W, int Ho, int Wo, \
                                int kh, int kw, int sh, int sw, int pad_top, int pad_left,              \
                                int pad_bottom, int pad_right, int count_include_pad),                  \
      (dy, dx, B, C, H, W, Ho, Wo, kh, kw, sh, sw, pad_top, pad_left, pad_bottom, pad_right,            \
       count_include_pad))                                                                              \
    V(decaf_lrn_forward, (const float *x, float *y, float *scale, int B, int C, int HW,                 \
                          int local_size, float alpha, float beta, float k),                            \
      (x, y, scale, B, C, HW, local_size, alpha, beta, k))                                              \
    V(decaf_lrn_backward, (const float *x, const float *y, const float *scale, const float *dy,         \
                           float *dx, int B, int C, int HW, int local_size, float alpha, float beta),   \
      (x, y, scale, dy, dx, B, C, HW, local_size, alpha, beta))                                         \
    V(decaf_depthwise_conv_forward, (const float *x, const float *w, const float *bias, float *y,       \
                                     int B, int C, int H, int W, int kh, int kw, int Ho, int Wo,        \
                                     int sh, int sw, int pad_top, int pad_left, int dil_h, int dil_w,   \
                                     const decaf_epilogue *ep, float *means),                           \
      (x, w, bias, y, B, C, H, W, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left, dil_h, dil_w, ep, means))  \
    V(decaf_depthwise_conv_backward, (const float *x, const float *w, const float *dy, float *dx,       \
                                      float *dw, int B, int C, int H, int W, int kh, int kw, int Ho,    \
                                      int Wo, int sh, int sw, int pad_top, int pad_left, int dil_h,     \
                                      int dil_w),                                                       \
      (x, w, dy, dx, dw, B, C, H, W, kh, kw, Ho, Wo, sh, sw, pad_top, pad_left, dil_h, dil_w))          \
    R(ptrdiff_t, decaf_copy_count_nonfinite, (const float *src, float *dst, ptrdiff_t n), (src, dst, n))  \
    V(decaf_erf, (const float *x, float *y, ptrdiff_t n), (x, y, n))                                     \
    V(decaf_gelu, (const float *x, float *y, ptrdiff_t n), (x, y, n))                                    \
    V(decaf_layernorm, (const float *x, const float *gamma, const float *beta, float *y, float *mean,        \
                        float *inv_std, ptrdiff_t outer, ptrdiff_t C, ptrdiff_t inner, float eps),          \
      (x, gamma, beta, y, mean, inv_std, outer, C, inner, eps))                                         \
    V(decaf_transpose, (const float *x, float *y, ptrdiff_t B, ptrdiff_t M, ptrdiff_t N), (x, y, B, M, N)) \
    V(decaf_sgd_step, (float *w, float *v, const float *g, ptrdiff_t n, float lr, float mu, float decay,   \
                       float scale, int nesterov), (w, v, g, n, lr, mu, decay, scale, nesterov))          \
    R(int, decaf_winograd_supported, (const decaf_conv_geom *g), (g))                                   \
    R(ptrdiff_t, decaf_winograd_packed_size, (const decaf_conv_geom *g), (g))                           \
    V(decaf_winograd_pack, (const decaf_conv_geom *g, const float *w, float *u), (g, w, u))             \
    R(ptrdiff_t, decaf_winograd_work_size, (const decaf_conv_geom *g, int threads), (g, threads))       \
    V(decaf_winograd_forward, (const decaf_conv_geom *g, int threads, const float *x, const float *u,   \
                               const float *bias, float *y, float *work, const decaf_epilogue *ep),     \
      (g, threads, x, u, bias, y, work, ep))                                                            \
    R(int, decaf_winograd_preferred, (const decaf_conv_geom *g, int threads), (g, threads))            \
    R(ptrdiff_t, decaf_winograd_weight_grad_work_size, (const decaf_conv_geom *g), (g))                  \
    V(decaf_winograd_weight_grad, (const decaf_conv_geom *g, int threads, const float *x, const float *dy, \
                                   float *dw, float *db, float *work),                                   \
      (g, threads, x, dy, dw, db, work))                                                                 \
    R(int, decaf_grouped_conv_supported, (const decaf_conv_geom *g), (g))                                \
    R(ptrdiff_t, decaf_grouped_conv_work_size, (const decaf_conv_geom *g, int threads), (g, threads))    \
    V(decaf_grouped_conv_forward, (const decaf_conv_geom *g, int threads, const float *x, const float *w, \
                                   const float *bias, float *y, float *work, const decaf_epilogue *ep),  \
      (g, threads, x, w, bias, y, work, ep))                                                            \
    R(int, decaf_grouped_conv_preferred, (const decaf_conv_geom *g, int threads), (g, threads))         \
    R(ptrdiff_t, decaf_grouped_conv_packed_size, (const decaf_conv_geom *g), (g))                       \
    V(decaf_grouped_conv_pack, (const decaf_conv_geom *g, const float *w, float *packed), (g, w, packed)) \
    V(decaf_grouped_conv_forward_packed, (const decaf_conv_geom *g, int threads, const float *x,        \
                                          const float *packed, const float *bias, float *y, float *work, \
                                          const decaf_epilogue *ep),                                    \
      (g, threads, x, packed, bias, y, work, ep))                                                       \
    R(int, decaf_pointwise_preferred, (const decaf_conv_geom *g, int threads), (g, threads))           \
    R(ptrdiff_t, decaf_pointwise_packed_size, (const decaf_conv_geom *g), (g))                          \
    V(decaf_pointwise_pack, (const decaf_conv_geom *g, const float *w, float *packed), (g, w, packed))  \
    V(decaf_pointwise_forward, (const decaf_conv_geom *g, int threads, const float *x, const float *w,  \
                                const float *packed, const float *bias, float *y, float *work,          \
                                const decaf_epilogue *ep),                                              \
      (g, threads, x, w, packed, bias, y, work, ep))

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

/* One table of the entry points per variant. */
typedef struct {
#define FIELD_R(ret, name, params, args) ret(*name) params;
#define FIELD_V(name, params, args) void(*name) params;
    CONV_ENTRY_POINTS(FIELD_R, FIELD_V)
    ENTRY_POINTS(FIELD_R, FIELD_V)
} kernel_table;

/* The variants' functions (name##SUFFIX), and a table of them. */
#define DECLARE_R(ret, name, params, args) ret CAT(name, SUFFIX) params;
#define DECLARE_V(name, params, args) void CAT(name, SUFFIX) params;
#define ENTRY_R(ret, name, params, args) .name = CAT(name, SUFFIX),
#define ENTRY_V(name, params, args) .name = CAT(name, SUFFIX),

#define SUFFIX _generic
CONV_ENTRY_POINTS(DECLARE_R, DECLARE_V)
ENTRY_POINTS(DECLARE_R, DECLARE_V)
static const kernel_table generic_table = {CONV_ENTRY_POINTS(ENTRY_R, ENTRY_V) ENTRY_POINTS(ENTRY_R, ENTRY_V)};
#undef SUFFIX
#ifdef DECAF_BUILT_AVX2
#define SUFFIX _avx2
CONV_ENTRY_POINTS(DECLARE_R, DECLARE_V)
ENTRY_POINTS(DECLARE_R, DECLARE_V)
static const kernel_table avx2_table = {CONV_ENTRY_POINTS(ENTRY_R, ENTRY_V) ENTRY_POINTS(ENTRY_R, ENTRY_V)};
#undef SUFFIX
#endif
#ifdef DECAF_BUILT_AVX512
#define SUFFIX _avx512
CONV_ENTRY_POINTS(DECLARE_R, DECLARE_V)
ENTRY_POINTS(DECLARE_R, DECLARE_V)
static const kernel_table avx512_table = {CONV_ENTRY_POINTS(ENTRY_R, ENTRY_V) ENTRY_POINTS(ENTRY_R, ENTRY_V)};
#undef SUFFIX
#endif

/* The table of each variant, NULL where it is not built. */
static const kernel_table *const tables[DECAF_ISA_COUNT] = {
    &generic_table,
#ifdef DECAF_BUILT_AVX2
    &avx2_table,
#else
    NULL,
#endif
#ifdef DECAF_BUILT_AVX512
    &avx512_table,
#else
    NULL,
#endif
};

static const char *const names[DECAF_ISA_COUNT] = {"generic", "avx2", "avx512"};

const char *decaf_isa_name(int isa)
{
    return isa >= 0 && isa < DECAF_ISA_COUNT ? names[isa] : NULL;
}

static int cpu_runs(int isa)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    switch (isa) {
    case DECAF_ISA_GENERIC: return 1;
    case DECAF_ISA_AVX2: return avx2;
    case DECAF_ISA_AVX512:   /* the -m flags of setup.py's avx512 variant */
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    default: return 0;
    }
#else
    return isa == DECAF_ISA_GENERIC;
#endif
}

int decaf_isa_supported(int isa)
{
    return isa >= 0 && isa < DECAF_ISA_COUNT && tables[isa] != NULL && cpu_runs(isa);
}

int decaf_isa_best(void)
{
    for (int isa = DECAF_ISA_COUNT - 1; isa > 0; --isa)
        if (decaf_isa_supported(isa))
            return isa;
    return DECAF_ISA_GENERIC;
}

static int current = -1;   /* -1: not chosen yet (the first call takes the best) */

int decaf_isa_select(int isa)
{
    if (!decaf_isa_supported(isa))
        return -1;
    current = isa;
    return 0;
}

int decaf_isa_current(void)
{
    if (current < 0)
        current = decaf_isa_best();
    return current;
}

static const kernel_table *active(void)
{
    return tables[decaf_isa_current()];
}

/* A plan's own variant: it sized the plan's scratch for that variant's kernels. */
static const kernel_table *of_plan(const decaf_conv_plan *p)
{
    return p->isa >= 0 && p->isa < DECAF_ISA_COUNT && tables[p->isa] ? tables[p->isa] : tables[DECAF_ISA_GENERIC];
}

decaf_conv_plan decaf_conv_make_plan(const decaf_conv_geom *g, int threads, int mode)
{
    const int isa = decaf_isa_current();
    decaf_conv_plan p = tables[isa]->decaf_conv_make_plan(g, threads, mode);
    p.isa = isa;
    return p;
}

void decaf_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                        const float *packed, const float *bias, float *y, float *work, const decaf_epilogue *ep)
{
    of_plan(p)->decaf_conv_forward(g, p, x, w, packed, bias, y, work, ep);
}

void decaf_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *packed)
{
    of_plan(p)->decaf_conv_pack(g, p, w, packed);
}

void decaf_conv_backward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *db, float *work)
{
    of_plan(p)->decaf_conv_backward(g, p, x, w, dy, dx, dw, db, work);
}

/* Every other entry point: the variant in use. */
#define FORWARD_R(ret, name, params, args) ret name params { return active()->name args; }
#define FORWARD_V(name, params, args) void name params { active()->name args; }
ENTRY_POINTS(FORWARD_R, FORWARD_V)
