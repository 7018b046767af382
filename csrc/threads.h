/* The thread count of decaf's own OpenMP loops.
 *
 * omp_set_num_threads() only changes the calling thread's setting, so a Python thread other than the
 * one that called it would still use the default. The count is therefore kept in one process-wide
 * variable and every parallel loop passes it in a num_threads() clause. */
#ifndef DECAF_THREADS_H
#define DECAF_THREADS_H

#include <stddef.h>

/* n <= 0 restores the OpenMP default (OMP_NUM_THREADS or the number of cores). */
void decaf_set_num_threads(int n);
int decaf_get_num_threads(void);

/* Threads for a loop doing about `work` element operations: 1 when the loop is too small for the
 * cost of waking the thread team to pay, decaf_get_num_threads() otherwise. */
int decaf_threads_for(ptrdiff_t work);

/* Bytes of the last-level cache as the system reports it (16 MB when it does not): beyond it a
 * kernel's output cannot stay cached for the next layer (pointwise.c then streams its stores). */
double decaf_last_cache_bytes(void);

/* omp_get_thread_num() / omp_get_num_threads(), for code that splits work by hand. */
int decaf_thread_num(void);
int decaf_team_size(void);

#endif
