/* The BLAS decaf calls (see gemm.h): its entry points, set once from Python, shared by every
 * instruction set variant of the kernels (compiled once, for the baseline: see isa.h). */
#include "gemm.h"

#include <stddef.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };   /* CBLAS's enum values */

static decaf_cblas_sgemm_fn sgemm_impl = NULL;
static decaf_cblas_sgemv_fn sgemv_impl = NULL;
static int (*blas_get_threads)(void) = NULL;
static void (*blas_set_threads)(int) = NULL;

void decaf_set_sgemm(void *cblas_sgemm, void *cblas_sgemv, void *get_num_threads, void *set_num_threads)
{
    sgemm_impl = (decaf_cblas_sgemm_fn)cblas_sgemm;
    sgemv_impl = (decaf_cblas_sgemv_fn)cblas_sgemv;
    blas_get_threads = (int (*)(void))get_num_threads;
    blas_set_threads = (void (*)(int))set_num_threads;
    decaf_blas_single_threaded();
}

void decaf_blas_single_threaded(void)
{
    if (blas_get_threads && blas_set_threads && blas_get_threads() != 1)
        blas_set_threads(1);
}

int decaf_have_sgemm(void)
{
    return sgemm_impl != NULL;
}

int decaf_have_sgemv(void)
{
    return sgemv_impl != NULL;
}

void decaf_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    sgemm_impl(ROW_MAJOR, trans_a ? TRANS : NO_TRANS, trans_b ? TRANS : NO_TRANS, M, N, K,
               alpha, A, lda, B, ldb, beta, C, ldc);
}

void decaf_sgemv_serial(int trans, int M, int N, float alpha, const float *A, int lda, const float *x, int incx,
                        float beta, float *y, int incy)
{
    sgemv_impl(ROW_MAJOR, trans ? TRANS : NO_TRANS, M, N, alpha, A, lda, x, incx, beta, y, incy);
}
