#include "batchnorm.h"

#include <math.h>

#include "threads.h"

/* Each thread takes a run of channels and does all of one channel's work before the next: the
 * statistics read the channel's B planes, then the second loop reads them again while they are
 * still in the cache (a 56x56 channel of a batch of 64 is 800 kB), so each tensor comes from memory
 * about once. Every plane (b, c) is HW contiguous values. A (B, C) tensor (HW 1) has planes of one
 * value: there each image is one run of C values, and the loops go over a block of channels at
 * once (the *_vectors functions). */

/* Statistics, in double, shifted by the channel's first value k: s = sum(x - k), q = sum((x - k)^2)
 * in one pass, then mean = k + s / m, var = (q - s^2 / m) / m. The shift keeps the subtraction from
 * cancelling when |mean| >> std (as the plain sum of squares would); double keeps the rounding of a
 * million additions far below float's resolution. (x - k) in double is exact, its square rounded
 * once. */
static inline void finish_statistics(double k, double s, double q, double m, float *mean, float *var)
{
    const double v = (q - s * s / m) / m;
    *mean = (float)(k + s / m);
    *var = (float)(v > 0.0 ? v : 0.0);
}

/* 1 / sqrt(var + eps), one expression for forward and backward. */
static inline float inv_std_of(float var, float eps)
{
    return 1.0f / sqrtf(var + eps);
}

/* The gradient of one channel from sdy = sum(dy) and sdyx = sum(dy (x - mu)) (m values):
 * dbeta = sdy, dgamma = sdyx inv_std = sum(dy xhat), and dx = a dy + k (x - mu) + b, which is
 * gamma inv_std (dy - dbeta / m - (x - mu) inv_std dgamma / m). */
typedef struct {
    float mu, a, k, b;
} gradient_line;

static inline gradient_line gradient_of(double sdy, double sdyx, double m, float mean, float var, float eps,
                                        const float *gamma, ptrdiff_t c, float *dgamma, float *dbeta)
{
    const double inv_std = inv_std_of(var, eps), dg = sdyx * inv_std;
    if (dbeta)
        dbeta[c] = (float)sdy;
    if (dgamma)
        dgamma[c] = (float)dg;
    const double a = (gamma ? gamma[c] : 1.0f) * inv_std;
    const gradient_line line = {mean, (float)a, (float)(-a * inv_std * dg / m), (float)(-a * sdy / m)};
    return line;
}

/* The epilogue follows each run of at most this many values, still in the level-1 cache (a plane
 * of 112x112 is 49 kB: its epilogue read it back from level 2, and cost half the pass). */
enum { EPILOGUE_RUN = 2048 };

/* y = (x - mu) s + t over one run, x and y apart. */
static inline void normalise_run(const float *restrict x, float *restrict y, ptrdiff_t n, float mu, float s,
                                 float t)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = (x[i] - mu) * s + t;
}

/* The same with a clamp (ReLU, ReLU6) in y: the expression of activation.h's decaf_act_clamp (a NaN
 * stays NaN), without a second loop over y. */
static inline void normalise_clamp_run(const float *restrict x, float *restrict y, ptrdiff_t n, float mu, float s,
                                       float t, float lo, float hi)
{
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = (x[i] - mu) * s + t, a = v < lo ? lo : v;
        y[i] = a > hi ? hi : a;
    }
}

/* dx = a dy + k (x - mu) + b over one run. */
static inline void gradient_run(const float *restrict x, const float *restrict dy, float *restrict dx,
                                ptrdiff_t n, gradient_line g)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        dx[i] = g.a * dy[i] + g.k * (x[i] - g.mu) + g.b;
}

/* ---- planes of HW > 1 values: one channel at a time ---- */

static void forward_planes(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *var,
                           ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps, const decaf_epilogue *ep,
                           ptrdiff_t c0, ptrdiff_t c1)
{
    const int clamp = decaf_epilogue_is_clamp(ep);
    for (ptrdiff_t c = c0; c < c1; ++c) {
        const double k = x[c * HW];
        double s = 0.0, q = 0.0;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const float *p = x + (b * C + c) * HW;
            #pragma omp simd reduction(+ : s, q)
            for (ptrdiff_t i = 0; i < HW; ++i) {
                const double d = (double)p[i] - k;
                s += d;
                q += d * d;
            }
        }
        finish_statistics(k, s, q, (double)(B * HW), &mean[c], &var[c]);
        const float mu = mean[c], sc = inv_std_of(var[c], eps) * (gamma ? gamma[c] : 1.0f);
        const float t = beta ? beta[c] : 0.0f;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const ptrdiff_t plane = (b * C + c) * HW;
            if (clamp) {
                normalise_clamp_run(x + plane, y + plane, HW, mu, sc, t, ep->lo, ep->hi);
                continue;
            }
            for (ptrdiff_t i = 0; i < HW; i += EPILOGUE_RUN) {   /* the epilogue reads the run in L1 */
                const ptrdiff_t at = plane + i, n = HW - i < EPILOGUE_RUN ? HW - i : EPILOGUE_RUN;
                normalise_run(x + at, y + at, n, mu, sc, t);
                if (ep)
                    decaf_epilogue_at(ep, y, at, n, 0.0f);
            }
        }
    }
}

static void backward_planes(const float *x, const float *dy, const float *mean, const float *var, const float *gamma,
                            float *dx, float *dgamma, float *dbeta, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                            ptrdiff_t c0, ptrdiff_t c1)
{
    for (ptrdiff_t c = c0; c < c1; ++c) {
        const double mu = mean[c];
        double sdy = 0.0, sdyx = 0.0;    /* sum(dy), sum(dy (x - mu)): in double, as the statistics */
        for (ptrdiff_t b = 0; b < B; ++b) {
            const ptrdiff_t at = (b * C + c) * HW;
            const float *xp = x + at, *gp = dy + at;
            #pragma omp simd reduction(+ : sdy, sdyx)
            for (ptrdiff_t i = 0; i < HW; ++i) {
                const double g = gp[i];
                sdy += g;
                sdyx += g * ((double)xp[i] - mu);
            }
        }
        const gradient_line line = gradient_of(sdy, sdyx, (double)(B * HW), mean[c], var[c], eps, gamma, c,
                                               dgamma, dbeta);
        if (!dx)
            continue;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const ptrdiff_t at = (b * C + c) * HW;
            gradient_run(x + at, dy + at, dx + at, HW, line);
        }
    }
}

/* ---- HW 1: each image a run of C values, a block of channels at a time ---- */

enum { BLOCK = 256 };

static void forward_vectors(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                            float *var, ptrdiff_t B, ptrdiff_t C, float eps, const decaf_epilogue *ep,
                            ptrdiff_t c0, ptrdiff_t c1)
{
    double k[BLOCK], s[BLOCK], q[BLOCK];
    float mu[BLOCK], sc[BLOCK], t[BLOCK];
    for (ptrdiff_t cb = c0; cb < c1; cb += BLOCK) {
        const ptrdiff_t n = c1 - cb < BLOCK ? c1 - cb : BLOCK;
        for (ptrdiff_t j = 0; j < n; ++j) {
            k[j] = x[cb + j];
            s[j] = q[j] = 0.0;
        }
        for (ptrdiff_t b = 0; b < B; ++b) {
            const float *r = x + b * C + cb;
            for (ptrdiff_t j = 0; j < n; ++j) {
                const double d = (double)r[j] - k[j];
                s[j] += d;
                q[j] += d * d;
            }
        }
        for (ptrdiff_t j = 0; j < n; ++j) {
            const ptrdiff_t c = cb + j;
            finish_statistics(k[j], s[j], q[j], (double)B, &mean[c], &var[c]);
            mu[j] = mean[c];
            sc[j] = inv_std_of(var[c], eps) * (gamma ? gamma[c] : 1.0f);
            t[j] = beta ? beta[c] : 0.0f;
        }
        for (ptrdiff_t b = 0; b < B; ++b) {
            const float *restrict r = x + b * C + cb;
            float *restrict o = y + b * C + cb;
            for (ptrdiff_t j = 0; j < n; ++j)
                o[j] = (r[j] - mu[j]) * sc[j] + t[j];
            if (ep)
                decaf_epilogue_at(ep, y, b * C + cb, n, 0.0f);
        }
    }
}

static void backward_vectors(const float *x, const float *dy, const float *mean, const float *var,
                             const float *gamma, float *dx, float *dgamma, float *dbeta, ptrdiff_t B, ptrdiff_t C,
                             float eps, ptrdiff_t c0, ptrdiff_t c1)
{
    double mu[BLOCK], sdy[BLOCK], sdyx[BLOCK];
    gradient_line line[BLOCK];
    for (ptrdiff_t cb = c0; cb < c1; cb += BLOCK) {
        const ptrdiff_t n = c1 - cb < BLOCK ? c1 - cb : BLOCK;
        for (ptrdiff_t j = 0; j < n; ++j) {
            mu[j] = mean[cb + j];
            sdy[j] = sdyx[j] = 0.0;
        }
        for (ptrdiff_t b = 0; b < B; ++b) {
            const float *r = x + b * C + cb, *g = dy + b * C + cb;
            for (ptrdiff_t j = 0; j < n; ++j) {
                sdy[j] += g[j];
                sdyx[j] += (double)g[j] * ((double)r[j] - mu[j]);
            }
        }
        for (ptrdiff_t j = 0; j < n; ++j)
            line[j] = gradient_of(sdy[j], sdyx[j], (double)B, mean[cb + j], var[cb + j], eps, gamma, cb + j,
                                  dgamma, dbeta);
        if (!dx)
            continue;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const float *restrict r = x + b * C + cb, *restrict g = dy + b * C + cb;
            float *restrict o = dx + b * C + cb;
            for (ptrdiff_t j = 0; j < n; ++j)
                o[j] = line[j].a * g[j] + line[j].k * (r[j] - line[j].mu) + line[j].b;
        }
    }
}

/* ---- the entry points: channels split among the threads ---- */

/* The work decaf_threads_for weighs: as channel_affine.c's, a pass bound by memory pays for a
 * second thread only on large tensors (a quarter of an operation per value: 128k values and up;
 * a (64, 1000) tensor ran 7x slower on two threads than on one). */
static int threads_for(ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW)
{
    return C > 1 ? decaf_threads_for(B * C * HW / 4) : 1;
}

static void forward_part(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *var,
                         ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps, const decaf_epilogue *ep, int part,
                         int parts)
{
    const ptrdiff_t c0 = C * part / parts, c1 = C * (part + 1) / parts;
    if (HW == 1)
        forward_vectors(x, gamma, beta, y, mean, var, B, C, eps, ep, c0, c1);
    else
        forward_planes(x, gamma, beta, y, mean, var, B, C, HW, eps, ep, c0, c1);
}

void decaf_batchnorm_train_forward(const float *x, const float *gamma, const float *beta, float *y,
                                   float *mean, float *var, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                                   const decaf_epilogue *ep)
{
    if (B <= 0 || C <= 0 || HW <= 0)
        return;
    if (ep && ep->act == DECAF_ACT_NONE && !ep->residual)
        ep = NULL;
    const int threads = threads_for(B, C, HW);
    if (threads <= 1) {
        forward_part(x, gamma, beta, y, mean, var, B, C, HW, eps, ep, 0, 1);
        return;
    }
    #pragma omp parallel num_threads(threads)
    forward_part(x, gamma, beta, y, mean, var, B, C, HW, eps, ep, decaf_thread_num(), decaf_team_size());
}

static void backward_part(const float *x, const float *dy, const float *mean, const float *var, const float *gamma,
                          float *dx, float *dgamma, float *dbeta, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                          int part, int parts)
{
    const ptrdiff_t c0 = C * part / parts, c1 = C * (part + 1) / parts;
    if (HW == 1)
        backward_vectors(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, eps, c0, c1);
    else
        backward_planes(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps, c0, c1);
}

void decaf_batchnorm_train_backward(const float *x, const float *dy, const float *mean, const float *var,
                                    const float *gamma, float *dx, float *dgamma, float *dbeta, ptrdiff_t B,
                                    ptrdiff_t C, ptrdiff_t HW, float eps)
{
    if (B <= 0 || C <= 0 || HW <= 0)
        return;
    const int threads = threads_for(B, C, HW);
    if (threads <= 1) {
        backward_part(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps, 0, 1);
        return;
    }
    #pragma omp parallel num_threads(threads)
    backward_part(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps, decaf_thread_num(), decaf_team_size());
}
