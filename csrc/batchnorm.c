#include "batchnorm.h"

#include <math.h>

#include "threads.h"

/* Each thread takes a run of channels and does all of one channel's work before the next: the
 * statistics read the channel's B planes, then the second loop reads them again while they are
 * still in the cache (a 56x56 channel of a batch of 64 is 800 kB), so each tensor comes from memory
 * about once. Every plane (b, c) is HW contiguous values. */

/* 1 / sqrt(var + eps), one expression for forward and backward. */
static inline float inv_std_of(float var, float eps)
{
    return 1.0f / sqrtf(var + eps);
}

/* Channel c's mean and biased variance, in one pass, accumulated in double and shifted by the
 * channel's first value k: s = sum(x - k), q = sum((x - k)^2), mean = k + s / m,
 * var = (q - s^2 / m) / m. The shift keeps the subtraction from cancelling when |mean| >> std (as
 * the plain sum of squares would); double keeps the rounding of a million additions far below
 * float's resolution. (x - k) in double is exact, its square rounded once. */
static void channel_statistics(const float *x, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, ptrdiff_t c,
                               float *mean, float *var)
{
    const double k = x[c * HW], m = (double)(B * HW);
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
    const double v = (q - s * s / m) / m;
    *mean = (float)(k + s / m);
    *var = (float)(v > 0.0 ? v : 0.0);
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

static void forward_channels(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                             float *var, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                             const decaf_epilogue *ep, ptrdiff_t c0, ptrdiff_t c1)
{
    const int clamp = ep && ep->act == DECAF_ACT_CLAMP && !ep->out && !ep->residual;
    for (ptrdiff_t c = c0; c < c1; ++c) {
        channel_statistics(x, B, C, HW, c, &mean[c], &var[c]);
        const float mu = mean[c], s = inv_std_of(var[c], eps) * (gamma ? gamma[c] : 1.0f);
        const float t = beta ? beta[c] : 0.0f;
        for (ptrdiff_t b = 0; b < B; ++b) {
            const ptrdiff_t plane = (b * C + c) * HW;
            if (clamp) {
                normalise_clamp_run(x + plane, y + plane, HW, mu, s, t, ep->lo, ep->hi);
                continue;
            }
            for (ptrdiff_t i = 0; i < HW; i += EPILOGUE_RUN) {   /* the epilogue reads the run in L1 */
                const ptrdiff_t at = plane + i, n = HW - i < EPILOGUE_RUN ? HW - i : EPILOGUE_RUN;
                normalise_run(x + at, y + at, n, mu, s, t);
                if (ep)
                    decaf_epilogue_at(ep, y, at, n, 0.0f);
            }
        }
    }
}

/* The work decaf_threads_for weighs: a few operations per value (the statistics in double), and
 * the forward's epilogue. */
static ptrdiff_t work_of(ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW)
{
    return B * C * HW;
}

void decaf_batchnorm_train_forward(const float *x, const float *gamma, const float *beta, float *y,
                                   float *mean, float *var, ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, float eps,
                                   const decaf_epilogue *ep)
{
    if (B <= 0 || C <= 0 || HW <= 0)
        return;
    if (ep && ep->act == DECAF_ACT_NONE && !ep->residual)
        ep = NULL;
    const int threads = C > 1 ? decaf_threads_for(work_of(B, C, HW)) : 1;
    if (threads <= 1) {
        forward_channels(x, gamma, beta, y, mean, var, B, C, HW, eps, ep, 0, C);
        return;
    }
    #pragma omp parallel num_threads(threads)
    {
        const int part = decaf_thread_num(), parts = decaf_team_size();
        forward_channels(x, gamma, beta, y, mean, var, B, C, HW, eps, ep, C * part / parts,
                         C * (part + 1) / parts);
    }
}

/* dx = a dy + k (x - mu) + b over one plane. */
static inline void gradient_run(const float *restrict x, const float *restrict dy, float *restrict dx,
                                ptrdiff_t n, float mu, float a, float k, float b)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        dx[i] = a * dy[i] + k * (x[i] - mu) + b;
}

static void backward_channels(const float *x, const float *dy, const float *mean, const float *var,
                              const float *gamma, float *dx, float *dgamma, float *dbeta, ptrdiff_t B,
                              ptrdiff_t C, ptrdiff_t HW, float eps, ptrdiff_t c0, ptrdiff_t c1)
{
    const double m = (double)(B * HW);
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
        const double inv_std = inv_std_of(var[c], eps), sdxhat = sdyx * inv_std;   /* sum(dy xhat) */
        if (dbeta)
            dbeta[c] = (float)sdy;
        if (dgamma)
            dgamma[c] = (float)sdxhat;
        if (!dx)
            continue;
        /* gamma inv_std (dy - sdy / m - (x - mu) inv_std sdxhat / m) = a dy + k (x - mu) + b */
        const double a = (gamma ? gamma[c] : 1.0f) * inv_std;
        const float fa = (float)a, fk = (float)(-a * inv_std * sdxhat / m), fb = (float)(-a * sdy / m);
        const float fmu = mean[c];
        for (ptrdiff_t b = 0; b < B; ++b) {
            const ptrdiff_t at = (b * C + c) * HW;
            gradient_run(x + at, dy + at, dx + at, HW, fmu, fa, fk, fb);
        }
    }
}

void decaf_batchnorm_train_backward(const float *x, const float *dy, const float *mean, const float *var,
                                    const float *gamma, float *dx, float *dgamma, float *dbeta, ptrdiff_t B,
                                    ptrdiff_t C, ptrdiff_t HW, float eps)
{
    if (B <= 0 || C <= 0 || HW <= 0)
        return;
    const int threads = C > 1 ? decaf_threads_for(work_of(B, C, HW)) : 1;
    if (threads <= 1) {
        backward_channels(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps, 0, C);
        return;
    }
    #pragma omp parallel num_threads(threads)
    {
        const int part = decaf_thread_num(), parts = decaf_team_size();
        backward_channels(x, dy, mean, var, gamma, dx, dgamma, dbeta, B, C, HW, eps, C * part / parts,
                          C * (part + 1) / parts);
    }
}
