#include "channel_affine.h"

#include "threads.h"

/* The work decaf_threads_for weighs: a pass without an exponential is bound by memory, and a
 * second thread pays only on large tensors (a quarter of an operation per value, as
 * elementwise.c's copy); an exponential (SILU, SIGMOID, GELU) costs about a dozen operations. */
static ptrdiff_t work_of(ptrdiff_t values, const decaf_epilogue *ep)
{
    if (ep && (ep->act == DECAF_ACT_SILU || ep->act == DECAF_ACT_SIGMOID || ep->act == DECAF_ACT_GELU))
        return values * 8;
    return values / 4;
}

/* y[i] = x[i] * s + t over one run, x and y apart or the same array (two loops, so that neither
 * needs the compiler's run-time overlap test). */
static inline void affine_run(const float *restrict x, float *restrict y, ptrdiff_t n, float s, float t)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = x[i] * s + t;
}

static inline void affine_run_in_place(float *y, ptrdiff_t n, float s, float t)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = y[i] * s + t;
}

/* y[i] = clamp(x[i] * s + t, lo, hi) over one run: an affine followed by a clamp (BatchNorm -> ReLU,
 * DenseNet's 120 of them) in one loop; as a second pass over the run (the epilogue) it took as long
 * as the affine itself. decaf_clamp is the epilogue's own clamp (a NaN stays NaN). */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* as activation.h's loops: else the selects stay branches */
static void affine_clamp_run(const float *restrict x, float *restrict y, ptrdiff_t n, float s, float t,
                             float lo, float hi)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = decaf_clamp(x[i] * s + t, lo, hi);
}

static void affine_clamp_run_in_place(float *y, ptrdiff_t n, float s, float t, float lo, float hi)
{
    for (ptrdiff_t i = 0; i < n; ++i)
        y[i] = decaf_clamp(y[i] * s + t, lo, hi);
}
#pragma GCC pop_options

/* The epilogue runs over a few planes at once (it is the same for every channel): fewer calls
 * when the planes are small (7x7), the values still in the level-1 cache. */
enum { EPILOGUE_RUN = 2048 };

/* Planes p0 .. p1 of the (B C) planes of HW values (plane p is channel c = p mod C of image
 * b = p / C: at p HW in y, at b x_image + c HW in x). */
static void affine_planes(const float *x, ptrdiff_t x_image, const float *scale, const float *shift, float *y,
                          ptrdiff_t C, ptrdiff_t HW, ptrdiff_t p0, ptrdiff_t p1, const decaf_epilogue *ep)
{
    ptrdiff_t c = p0 % C, pending = p0 * HW;      /* pending: where the values without epilogue start */
    if (decaf_epilogue_is_clamp(ep)) {   /* the clamp in the same loop */
        for (ptrdiff_t p = p0; p < p1; ++p) {
            const float t = shift ? shift[c] : 0.0f;
            if (x == y)
                affine_clamp_run_in_place(y + p * HW, HW, scale[c], t, ep->lo, ep->hi);
            else
                affine_clamp_run(x + (p / C) * x_image + c * HW, y + p * HW, HW, scale[c], t, ep->lo, ep->hi);
            if (++c == C)
                c = 0;
        }
        return;
    }
    for (ptrdiff_t p = p0; p < p1; ++p) {
        const ptrdiff_t at = p * HW;
        const float t = shift ? shift[c] : 0.0f;
        if (x == y)
            affine_run_in_place(y + at, HW, scale[c], t);
        else
            affine_run(x + (p / C) * x_image + c * HW, y + at, HW, scale[c], t);
        if (++c == C)
            c = 0;
        if (ep && (at + HW - pending >= EPILOGUE_RUN || p + 1 == p1)) {
            decaf_epilogue_at(ep, y, pending, at + HW - pending, 0.0f);
            pending = at + HW;
        }
    }
}

/* Images b0 .. b1 of a tensor with one value per channel (HW 1, after an inner product): each
 * image is one run, every value with its own scale and shift. */
static void affine_vectors(const float *x, ptrdiff_t x_image, const float *scale, const float *shift, float *y,
                           ptrdiff_t C, ptrdiff_t b0, ptrdiff_t b1, const decaf_epilogue *ep)
{
    for (ptrdiff_t b = b0; b < b1; ++b) {
        const float *xb = x + b * x_image;
        float *yb = y + b * C;
        for (ptrdiff_t i = 0; i < C; ++i)
            yb[i] = xb[i] * scale[i] + (shift ? shift[i] : 0.0f);
        if (ep)
            decaf_epilogue_at(ep, y, b * C, C, 0.0f);
    }
}

static void affine_part(const float *x, ptrdiff_t x_image, const float *scale, const float *shift, float *y,
                        ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const decaf_epilogue *ep, int part, int parts)
{
    const ptrdiff_t n = HW == 1 ? B : B * C;       /* runs: images, or planes */
    const ptrdiff_t first = n * part / parts, last = n * (part + 1) / parts;
    if (HW == 1)
        affine_vectors(x, x_image, scale, shift, y, C, first, last, ep);
    else
        affine_planes(x, x_image, scale, shift, y, C, HW, first, last, ep);
}

void decaf_channel_affine(const float *x, ptrdiff_t x_image, const float *scale, const float *shift, float *y,
                          ptrdiff_t B, ptrdiff_t C, ptrdiff_t HW, const decaf_epilogue *ep)
{
    if (B <= 0 || C <= 0 || HW <= 0)
        return;
    if (ep && ep->act == DECAF_ACT_NONE && !ep->residual)
        ep = NULL;
    const int threads = decaf_threads_for(work_of(B * C * HW, ep));
    if (threads <= 1) {
        affine_part(x, x_image, scale, shift, y, B, C, HW, ep, 0, 1);
        return;
    }
    #pragma omp parallel num_threads(threads)
    affine_part(x, x_image, scale, shift, y, B, C, HW, ep, decaf_thread_num(), decaf_team_size());
}
