#include "gemm.h"

#include <stddef.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
/* The skinny and one-row kernels below are vector code (AVX-512, or AVX2 + FMA). The generic
 * variant hands those products to the BLAS instead, whose own kernels suit the CPU: scalar dot
 * products would be several times slower. */
#define SKINNY_SIMD 1
#endif

#include "threads.h"

/* Columns lo..hi of the one-row product C (1, N) = alpha a op(B) + beta C, where a is row 0 of op(A)
 * read with stride inc_a, as SGEMV: C^T = op(B)^T a^T. */
static void row_times_matrix(int trans_b, int K, float alpha, const float *a, int inc_a,
                             const float *B, int ldb, float beta, float *C, int lo, int hi)
{
    if (trans_b)   /* B stored (N, K): rows lo..hi of B times a */
        decaf_sgemv_serial(0, hi - lo, K, alpha, B + (ptrdiff_t)lo * ldb, ldb, a, inc_a, beta, C + lo, 1);
    else           /* B stored (K, N): columns lo..hi of B, transposed, times a */
        decaf_sgemv_serial(1, K, hi - lo, alpha, B + lo, ldb, a, inc_a, beta, C + lo, 1);
}

/* Rows lo..hi of the one-column product C (M, 1) = alpha op(A) b + beta C, b column 0 of op(B). */
static void matrix_times_column(int trans_a, int K, float alpha, const float *A, int lda, const float *b,
                                int inc_b, float beta, float *C, int ldc, int lo, int hi)
{
    if (trans_a)   /* A stored (K, M): columns lo..hi, transposed */
        decaf_sgemv_serial(1, K, hi - lo, alpha, A + lo, lda, b, inc_b, beta, C + (ptrdiff_t)lo * ldc, ldc);
    else
        decaf_sgemv_serial(0, hi - lo, K, alpha, A + (ptrdiff_t)lo * lda, lda, b, inc_b, beta,
                           C + (ptrdiff_t)lo * ldc, ldc);
}

#ifdef SKINNY_SIMD
/* Rows of B per tile of the skinny product below, and the most rows of A it takes. */
/* PREFETCH_AHEAD: floats ahead in each row of B to prefetch (1 KB: ~10 % faster at M = 10 here). */
/* (AVX2 has 16 vector registers: 4 x 3 accumulators, the 3 rows of B and one of A) */
#ifdef __AVX512F__
enum { SKINNY_N = 6, SKINNY_M = 4, SKINNY_MAX_M = 24, PREFETCH_AHEAD = 256 };
#else
enum { SKINNY_N = 3, SKINNY_M = 4, SKINNY_MAX_M = 24, PREFETCH_AHEAD = 256 };
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* The sum of the 8 lanes. */
static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* C[m, n] = alpha sum_k A[m, k] B[n, k] + beta C[m, n] for n in [lo, hi): A (M, K) with M small
 * (a fully connected layer's minibatch), B (N, K) (its weights). A BLAS packs B before multiplying,
 * which for a large B and a few rows of A costs more than the product; this reads each row of B
 * once from memory, for SKINNY_M rows of A at a time (B's tile stays in cache between them). */
static void skinny_abt(int M, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc, int lo, int hi)
{
    for (int n0 = lo; n0 < hi; n0 += SKINNY_N) {
        const int nn = hi - n0 < SKINNY_N ? hi - n0 : SKINNY_N;
        for (int m0 = 0; m0 < M; m0 += SKINNY_M) {
            const int mm = M - m0 < SKINNY_M ? M - m0 : SKINNY_M;
            float dot[SKINNY_M][SKINNY_N] = {{0.0f}};
            int k = 0;
#ifdef __AVX512F__
            {   /* SKINNY_M x SKINNY_N vector accumulators; a partial tile repeats its last row of A or
                 * B (the extra dots are computed and dropped) */
                const float *a_row[SKINNY_M], *b_row[SKINNY_N];
                __m512 acc[SKINNY_M][SKINNY_N];
                for (int i = 0; i < SKINNY_M; ++i) a_row[i] = A + (ptrdiff_t)(m0 + (i < mm ? i : mm - 1)) * lda;
                for (int j = 0; j < SKINNY_N; ++j) b_row[j] = B + (ptrdiff_t)(n0 + (j < nn ? j : nn - 1)) * ldb;
                for (int i = 0; i < SKINNY_M; ++i)
                    for (int j = 0; j < SKINNY_N; ++j) acc[i][j] = _mm512_setzero_ps();
                for (; k + 16 <= K; k += 16) {
                    __m512 b[SKINNY_N];
                    for (int j = 0; j < SKINNY_N; ++j) {
                        _mm_prefetch((const char *)(b_row[j] + k + PREFETCH_AHEAD), _MM_HINT_T0);
                        b[j] = _mm512_loadu_ps(b_row[j] + k);
                    }
                    for (int i = 0; i < SKINNY_M; ++i) {
                        const __m512 a = _mm512_loadu_ps(a_row[i] + k);
                        for (int j = 0; j < SKINNY_N; ++j) acc[i][j] = _mm512_fmadd_ps(a, b[j], acc[i][j]);
                    }
                }
                for (int i = 0; i < mm; ++i)
                    for (int j = 0; j < nn; ++j) dot[i][j] = _mm512_reduce_add_ps(acc[i][j]);
            }
#elif defined(SKINNY_SIMD)
            {   /* the same with 8 lanes */
                const float *a_row[SKINNY_M], *b_row[SKINNY_N];
                __m256 acc[SKINNY_M][SKINNY_N];
                for (int i = 0; i < SKINNY_M; ++i) a_row[i] = A + (ptrdiff_t)(m0 + (i < mm ? i : mm - 1)) * lda;
                for (int j = 0; j < SKINNY_N; ++j) b_row[j] = B + (ptrdiff_t)(n0 + (j < nn ? j : nn - 1)) * ldb;
                for (int i = 0; i < SKINNY_M; ++i)
                    for (int j = 0; j < SKINNY_N; ++j) acc[i][j] = _mm256_setzero_ps();
                for (; k + 8 <= K; k += 8) {
                    __m256 b[SKINNY_N];
                    for (int j = 0; j < SKINNY_N; ++j) {
                        if (k % 16 == 0)   /* one prefetch per 64-byte line */
                            _mm_prefetch((const char *)(b_row[j] + k + PREFETCH_AHEAD), _MM_HINT_T0);
                        b[j] = _mm256_loadu_ps(b_row[j] + k);
                    }
                    for (int i = 0; i < SKINNY_M; ++i) {
                        const __m256 a = _mm256_loadu_ps(a_row[i] + k);
                        for (int j = 0; j < SKINNY_N; ++j) acc[i][j] = _mm256_fmadd_ps(a, b[j], acc[i][j]);
                    }
                }
                for (int i = 0; i < mm; ++i)
                    for (int j = 0; j < nn; ++j) dot[i][j] = hsum8(acc[i][j]);
            }
#endif
            for (int i = 0; i < mm; ++i)        /* the rest of k (all of it without AVX-512) */
                for (int j = 0; j < nn; ++j) {
                    const float *a = A + (ptrdiff_t)(m0 + i) * lda, *b = B + (ptrdiff_t)(n0 + j) * ldb;
                    float s = 0.0f;
                    for (int kk = k; kk < K; ++kk) s += a[kk] * b[kk];
                    dot[i][j] += s;
                }
            for (int i = 0; i < mm; ++i)
                for (int j = 0; j < nn; ++j) {
                    float *c = C + (ptrdiff_t)(m0 + i) * ldc + n0 + j;
                    *c = alpha * dot[i][j] + (beta == 0.0f ? 0.0f : beta * *c);
                }
        }
    }
}

/* The one-row case of skinny_abt (a fully connected layer on one example): c[n] = alpha a . B[n]
 * + beta c[n] for n in [lo, hi), eight rows of B streamed at once. Memory-bound: what matters is
 * that B is read once, in long runs, by several streams the prefetchers can follow. */
static void row_abt(int K, float alpha, const float *a, const float *B, int ldb, float beta, float *c,
                    int lo, int hi)
{
    enum { R = 8 };
    for (int n0 = lo; n0 < hi; n0 += R) {
        const int nn = hi - n0 < R ? hi - n0 : R;
        float dot[R] = {0.0f};
        int k = 0;
#ifdef __AVX512F__
        const float *b_row[R];
        __m512 acc[R];
        for (int j = 0; j < R; ++j) {
            b_row[j] = B + (ptrdiff_t)(n0 + (j < nn ? j : nn - 1)) * ldb;
            acc[j] = _mm512_setzero_ps();
        }
        for (; k + 16 <= K; k += 16) {
            const __m512 av = _mm512_loadu_ps(a + k);
            for (int j = 0; j < R; ++j) acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(b_row[j] + k), av, acc[j]);
        }
        for (int j = 0; j < nn; ++j) dot[j] = _mm512_reduce_add_ps(acc[j]);
#elif defined(SKINNY_SIMD)
        const float *b_row[R];
        __m256 acc[R];
        for (int j = 0; j < R; ++j) {
            b_row[j] = B + (ptrdiff_t)(n0 + (j < nn ? j : nn - 1)) * ldb;
            acc[j] = _mm256_setzero_ps();
        }
        for (; k + 8 <= K; k += 8) {
            const __m256 av = _mm256_loadu_ps(a + k);
            for (int j = 0; j < R; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(b_row[j] + k), av, acc[j]);
        }
        for (int j = 0; j < nn; ++j) dot[j] = hsum8(acc[j]);
#endif
        for (int j = 0; j < nn; ++j) {
            const float *b = B + (ptrdiff_t)(n0 + j) * ldb;
            float s = 0.0f;
            for (int kk = k; kk < K; ++kk) s += a[kk] * b[kk];
            c[n0 + j] = alpha * (dot[j] + s) + (beta == 0.0f ? 0.0f : beta * c[n0 + j]);
        }
    }
}
#endif   /* SKINNY_SIMD */

/* This thread's share [lo, hi) of [0, total), cut in multiples of `quantum` (the last share ends
 * at total): the calling thread's number and team size choose it. */
static void thread_share(int total, int quantum, int *lo, int *hi)
{
    const int t = decaf_thread_num(), T = decaf_team_size();
    const int units = (total + quantum - 1) / quantum;
    const int l = (int)((ptrdiff_t)units * t / T) * quantum, h = (int)((ptrdiff_t)units * (t + 1) / T) * quantum;
    *lo = l < total ? l : total;
    *hi = h < total ? h : total;
}

void decaf_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef SKINNY_SIMD
    if (!trans_a && trans_b && M == 1 && N > 1 && K >= 256) {
        const int nt = decaf_threads_for((ptrdiff_t)N * K / 8);
        #pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            thread_share(N, 1, &lo, &hi);
            if (lo < hi)
                row_abt(K, alpha, A, B, ldb, beta, C, lo, hi);
        }
        return;
    }
    if (!trans_a && trans_b && M > 1 && M <= SKINNY_MAX_M && N > 1 && K >= 256) {
        const int nt = decaf_threads_for((ptrdiff_t)M * N * K / 8);
        #pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            thread_share(N, SKINNY_N, &lo, &hi);
            if (lo < hi)
                skinny_abt(M, K, alpha, A, lda, B, ldb, beta, C, ldc, lo, hi);
        }
        return;
    }
#endif
    if (decaf_have_sgemv() && (M == 1 || N == 1) && K > 0 && M > 0 && N > 0) {
        /* a matrix-vector product: split the long side over the threads */
        const int total = M == 1 ? N : M;
        const int nt = decaf_threads_for((ptrdiff_t)total * K / 8);
        decaf_blas_single_threaded();
        #pragma omp parallel num_threads(nt)
        {
            int lo, hi;
            thread_share(total, 1, &lo, &hi);
            if (lo < hi) {
                if (M == 1)   /* a = row 0 of op(A): stride 1, or lda when A is stored (K, 1) */
                    row_times_matrix(trans_b, K, alpha, A, trans_a ? lda : 1, B, ldb, beta, C, lo, hi);
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
        int lo, hi;
        thread_share(by_cols ? N : M, by_cols ? 16 : 8, &lo, &hi);
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
