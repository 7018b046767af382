#include "conv.h"

#include "gemm.h"
#include "im2col.h"
#include "threads.h"

ptrdiff_t decaf_conv_work_size(const decaf_conv_geom *g, int threads, int backward)
{
    const ptrdiff_t cols = (ptrdiff_t)g->C * g->kh * g->kw * g->Ho * g->Wo;
    const ptrdiff_t wsize = (ptrdiff_t)g->K * (g->C / g->G) * g->kh * g->kw;
    if (threads < 1) threads = 1;
    /* forward: one cols buffer per thread; backward: cols + dcols per thread, then one dw and db
     * partial sum per thread */
    return backward ? threads * (2 * cols + wsize + g->K) : threads * cols;
}

/* y[k, :] += bias[k] (if any), then max(0, .) if relu; channels k0..k1 of one image. */
static void bias_relu(float *y, const float *bias, int k0, int k1, ptrdiff_t hw, int relu)
{
    for (int k = k0; k < k1; ++k) {
        float *p = y + k * hw;
        const float b = bias ? bias[k] : 0.0f;
        if (relu)
            for (ptrdiff_t i = 0; i < hw; ++i) { const float v = p[i] + b; p[i] = v > 0.0f ? v : 0.0f; }
        else if (bias)
            for (ptrdiff_t i = 0; i < hw; ++i) p[i] += b;
    }
}

#define GEOM_ARGS(g) (g)->C, (g)->H, (g)->W, (g)->kh, (g)->kw, (g)->sh, (g)->sw, \
                     (g)->pad_top, (g)->pad_left, (g)->dh, (g)->dw, (g)->Ho, (g)->Wo

void decaf_conv_forward(const decaf_conv_geom *g, const float *x, const float *w, const float *bias,
                        float *y, float *work, int relu)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, plane_in = (ptrdiff_t)g->C * g->H * g->W;
    const int rows = g->C * g->kh * g->kw, Kg = g->K / g->G, Rg = rows / g->G;
    const int nt = decaf_get_num_threads();

    decaf_blas_single_threaded();
    if (g->B >= nt && nt > 1) {
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *cols = work + t * rows * hw;
            for (int b = g->B * t / T; b < g->B * (t + 1) / T; ++b) {
                float *yb = y + (ptrdiff_t)b * g->K * hw;
                decaf_im2col_serial(x + b * plane_in, cols, 1, GEOM_ARGS(g));
                for (int gi = 0; gi < g->G; ++gi)
                    decaf_sgemm_serial(0, 0, Kg, (int)hw, Rg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg,
                                       cols + gi * Rg * hw, (int)hw, 0.0f, yb + gi * Kg * hw, (int)hw);
                bias_relu(yb, bias, 0, g->K, hw, relu);
            }
        }
        return;
    }
    for (int b = 0; b < g->B; ++b) {   /* few images: split every step over all threads */
        float *yb = y + (ptrdiff_t)b * g->K * hw;
        decaf_im2col(x + b * plane_in, work, 1, GEOM_ARGS(g));
        for (int gi = 0; gi < g->G; ++gi)
            decaf_sgemm(0, 0, Kg, (int)hw, Rg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg,
                        work + gi * Rg * hw, (int)hw, 0.0f, yb + gi * Kg * hw, (int)hw);
        #pragma omp parallel for schedule(static) num_threads(decaf_threads_for(g->K * hw))
        for (int k = 0; k < g->K; ++k)
            bias_relu(yb, bias, k, k + 1, hw, relu);
    }
}

/* One image's share of the backward pass on the calling thread: dw_acc += dy_b cols^T (beta 0
 * on the first image overwrites), db_acc += pixel sums, dx_b = col2im(w^T dy_b). */
static void backward_image(const decaf_conv_geom *g, const float *xb, const float *w, const float *dyb,
                           float *dxb, float *dw_acc, float *db_acc, float *cols, float *dcols, int first)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo;
    const int rows = g->C * g->kh * g->kw, Kg = g->K / g->G, Rg = rows / g->G;
    decaf_im2col_serial(xb, cols, 1, GEOM_ARGS(g));
    for (int gi = 0; gi < g->G; ++gi)
        decaf_sgemm_serial(0, 1, Kg, Rg, (int)hw, 1.0f, dyb + gi * Kg * hw, (int)hw, cols + gi * Rg * hw,
                           (int)hw, first ? 0.0f : 1.0f, dw_acc + (ptrdiff_t)gi * Kg * Rg, Rg);
    if (db_acc)
        for (int k = 0; k < g->K; ++k) {
            float s = 0.0f;
            for (ptrdiff_t i = 0; i < hw; ++i) s += dyb[k * hw + i];
            db_acc[k] = first ? s : db_acc[k] + s;
        }
    if (dxb) {
        for (int gi = 0; gi < g->G; ++gi)
            decaf_sgemm_serial(1, 0, Rg, (int)hw, Kg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg, dyb + gi * Kg * hw,
                               (int)hw, 0.0f, dcols + gi * Rg * hw, (int)hw);
        decaf_col2im_serial(dcols, dxb, 1, GEOM_ARGS(g));
    }
}

void decaf_conv_backward(const decaf_conv_geom *g, const float *x, const float *w, const float *dy,
                         float *dx, float *dw, float *db, float *work)
{
    const ptrdiff_t hw = (ptrdiff_t)g->Ho * g->Wo, plane_in = (ptrdiff_t)g->C * g->H * g->W;
    const ptrdiff_t plane_out = (ptrdiff_t)g->K * hw;
    const ptrdiff_t cols_size = (ptrdiff_t)g->C * g->kh * g->kw * hw;
    const ptrdiff_t wsize = (ptrdiff_t)g->K * (g->C / g->G) * g->kh * g->kw, acc = wsize + g->K;
    const int nt = decaf_get_num_threads();

    decaf_blas_single_threaded();
    if (g->B >= nt && nt > 1) {
        /* work = [cols, dcols] x nt, then [dw partial, db partial] x nt */
        float *partials = work + nt * 2 * cols_size;
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            float *cols = work + t * 2 * cols_size, *part = partials + t * acc;
            const int b0 = g->B * t / T, b1 = g->B * (t + 1) / T;
            for (ptrdiff_t i = 0; i < acc; ++i) part[i] = 0.0f;   /* threads with no images add zeros */
            for (int b = b0; b < b1; ++b)
                backward_image(g, x + b * plane_in, w, dy + b * plane_out, dx ? dx + b * plane_in : NULL,
                               part, db ? part + wsize : NULL, cols, cols + cols_size, b == b0);
            #pragma omp barrier
            /* reduce the partial sums, each thread a slice of the elements */
            const ptrdiff_t lo = acc * t / T, hi = acc * (t + 1) / T;
            for (ptrdiff_t i = lo; i < hi; ++i) {
                float s = 0.0f;
                for (int u = 0; u < T; ++u) s += partials[u * acc + i];
                if (i < wsize) dw[i] = s;
                else if (db) db[i - wsize] = s;
            }
        }
        return;
    }
    const int rows = g->C * g->kh * g->kw, Kg = g->K / g->G, Rg = rows / g->G;
    float *cols = work, *dcols = work + cols_size;
    for (int b = 0; b < g->B; ++b) {   /* few images: split every step over all threads */
        const float *dyb = dy + b * plane_out;
        decaf_im2col(x + b * plane_in, cols, 1, GEOM_ARGS(g));
        for (int gi = 0; gi < g->G; ++gi)
            decaf_sgemm(0, 1, Kg, Rg, (int)hw, 1.0f, dyb + gi * Kg * hw, (int)hw, cols + gi * Rg * hw,
                        (int)hw, b == 0 ? 0.0f : 1.0f, dw + (ptrdiff_t)gi * Kg * Rg, Rg);
        if (db)
            for (int k = 0; k < g->K; ++k) {
                float s = 0.0f;
                for (ptrdiff_t i = 0; i < hw; ++i) s += dyb[k * hw + i];
                db[k] = b == 0 ? s : db[k] + s;
            }
        if (dx) {
            for (int gi = 0; gi < g->G; ++gi)
                decaf_sgemm(1, 0, Rg, (int)hw, Kg, 1.0f, w + (ptrdiff_t)gi * Kg * Rg, Rg, dyb + gi * Kg * hw,
                            (int)hw, 0.0f, dcols + gi * Rg * hw, (int)hw);
            decaf_col2im(dcols, dx + b * plane_in, 1, GEOM_ARGS(g));
        }
    }
}
