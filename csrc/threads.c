#include "threads.h"

#include <omp.h>

static int decaf_num_threads = 0; /* 0: use the OpenMP default */

void decaf_set_num_threads(int n)
{
    decaf_num_threads = n > 0 ? n : 0;
}

int decaf_get_num_threads(void)
{
    return decaf_num_threads > 0 ? decaf_num_threads : omp_get_max_threads();
}

int decaf_threads_for(ptrdiff_t work)
{
    /* Below ~32k element operations a parallel region costs more than it saves. */
    return work < 32768 ? 1 : decaf_get_num_threads();
}

int decaf_thread_num(void)
{
    return omp_get_thread_num();
}

int decaf_team_size(void)
{
    return omp_get_num_threads();
}
