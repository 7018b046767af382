/* SGEMM through a BLAS that decaf loads at run time, driven by decaf's own OpenMP threads.
 *
 * decaf does not link a BLAS: Python loads one (scipy-openblas32's OpenBLAS, single-threaded) and
 * hands over the address of its cblas_sgemm with decaf_set_sgemm(). All matrices are row-major;
 * trans_a / trans_b say whether A is stored as (K, M) and B as (N, K). */
#ifndef DECAF_GEMM_H
#define DECAF_GEMM_H

#include "isa.h"   /* first: the names of this header in a per-ISA compile */

typedef void (*decaf_cblas_sgemm_fn)(int order, int trans_a, int trans_b, int M, int N, int K,
                                     float alpha, const float *A, int lda, const float *B, int ldb,
                                     float beta, float *C, int ldc);

typedef void (*decaf_cblas_sgemv_fn)(int order, int trans, int M, int N, float alpha, const float *A,
                                     int lda, const float *x, int incx, float beta, float *y, int incy);

/* cblas_sgemm, cblas_sgemv, and the BLAS's get/set_num_threads (NULL if it has none). */
void decaf_set_sgemm(void *cblas_sgemm, void *cblas_sgemv, void *get_num_threads, void *set_num_threads);
int decaf_have_sgemm(void);

/* 1 when the BLAS has a cblas_sgemv (decaf_sgemv_serial calls it). */
int decaf_have_sgemv(void);

/* Put the BLAS back to one thread if something changed it (threadpoolctl, say, finds every OpenBLAS
 * in the process): decaf calls it from its own threads. Call outside parallel regions. */
void decaf_blas_single_threaded(void);

/* C = alpha op(A) op(B) + beta C on the calling thread only. */
void decaf_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* cblas_sgemv, row-major (trans: A^T x), on the calling thread only. */
void decaf_sgemv_serial(int trans, int M, int N, float alpha, const float *A, int lda, const float *x, int incx,
                        float beta, float *y, int incy);

/* The same as decaf_sgemm_serial, split over decaf's threads (by columns of C when it is wide, else by rows). A product
 * with one row or one column is a matrix-vector product, memory-bound: it runs as SGEMV. */
void decaf_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

#endif
