#include "gemm.h"

#include <stddef.h>

#include "threads.h"

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

void decaf_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    sgemm_impl(ROW_MAJOR, trans_a ? TRANS : NO_TRANS, trans_b ? TRANS : NO_TRANS, M, N, K,
               alpha, A, lda, B, ldb, beta, C, ldc);
}

/* Columns lo..hi of the one-row product C (1, N) = alpha a op(B) + beta C, where a is row 0 of op(A)
 * read with stride inc_a, as SGEMV: C^T = op(B)^T a^T. */
static void row_times_matrix(int trans_b, int N, int K, float alpha, const float *a, int inc_a,
                             const float *B, int ldb, float beta, float *C, int lo, int hi)
{
    if (trans_b)   /* B stored (N, K): rows lo..hi of B times a */
        sgemv_impl(ROW_MAJOR, NO_TRANS, hi - lo, K, alpha, B + (ptrdiff_t)lo * ldb, ldb, a, inc_a, beta, C + lo, 1);
    else           /* B stored (K, N): columns lo..hi of B, transposed, times a */
        sgemv_impl(ROW_MAJOR, TRANS, K, hi - lo, alpha, B + lo, ldb, a, inc_a, beta, C + lo, 1);
    (void)N;
}

/* Rows lo..hi of the one-column product C (M, 1) = alpha op(A) b + beta C, b column 0 of op(B). */
static void matrix_times_column(int trans_a, int K, float alpha, const float *A, int lda, const float *b,
                                int inc_b, float beta, float *C, int ldc, int lo, int hi)
{
    if (trans_a)   /* A stored (K, M): columns lo..hi, transposed */
        sgemv_impl(ROW_MAJOR, TRANS, K, hi - lo, alpha, A + lo, lda, b, inc_b, beta, C + (ptrdiff_t)lo * ldc, ldc);
    else
        sgemv_impl(ROW_MAJOR, NO_TRANS, hi - lo, K, alpha, A + (ptrdiff_t)lo * lda, lda, b, inc_b, beta,
                   C + (ptrdiff_t)lo * ldc, ldc);
}

void decaf_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (sgemv_impl && (M == 1 || N == 1) && K > 0 && M > 0 && N > 0) {
        /* a matrix-vector product: split the long side over the threads */
        const int total = M == 1 ? N : M;
        const int nt = decaf_threads_for((ptrdiff_t)total * K / 8);
        decaf_blas_single_threaded();
        #pragma omp parallel num_threads(nt)
        {
            const int t = decaf_thread_num(), T = decaf_team_size();
            const int lo = (int)((ptrdiff_t)total * t / T), hi = (int)((ptrdiff_t)total * (t + 1) / T);
            if (lo < hi) {
                if (M == 1)   /* a = row 0 of op(A): stride 1, or lda when A is stored (K, 1) */
                    row_times_matrix(trans_b, N, K, alpha, A, trans_a ? lda : 1, B, ldb, beta, C, lo, hi);
                else          /* b = column 0 of op(B): stride ldb, or 1 when B is stored (1, K) */
                    matrix_times_column(trans_a, K, alpha, A, lda, B, trans_b ? 1 : ldb, beta, C, ldc, lo, hi);
            }
        }
        return;
    }

    const int nt = decaf_threads_for((ptrdiff_t)M * N * (K > 0 ? K : 1) / 8);
    decaf_blas_single_threaded();
    /* Split the columns of C when each thread still gets a wide slice (the BLAS packs A once per
     * thread), else the rows; slices are multiples of 16 columns or 8 rows where possible. */
    const int by_cols = N >= 256 * nt || M < 16 * nt;
    #pragma omp parallel num_threads(nt)
    {
        const int t = decaf_thread_num(), T = decaf_team_size();
        const int total = by_cols ? N : M, quantum = by_cols ? 16 : 8;
        const int units = (total + quantum - 1) / quantum;
        int lo = (int)((ptrdiff_t)units * t / T) * quantum;
        int hi = (int)((ptrdiff_t)units * (t + 1) / T) * quantum;
        if (hi > total) hi = total;
        if (lo < hi) {
            if (by_cols) {
                /* columns lo..hi of op(B): B is (K, N) -> B + lo; B stored (N, K) -> row lo */
                const float *b = trans_b ? B + (ptrdiff_t)lo * ldb : B + lo;
                decaf_sgemm_serial(trans_a, trans_b, M, hi - lo, K, alpha, A, lda, b, ldb, beta, C + lo, ldc);
            } else {
                /* rows lo..hi of op(A): A is (M, K) -> row lo; A stored (K, M) -> A + lo */
                const float *a = trans_a ? A + lo : A + (ptrdiff_t)lo * lda;
                decaf_sgemm_serial(trans_a, trans_b, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                                   C + (ptrdiff_t)lo * ldc, ldc);
            }
        }
    }
}
