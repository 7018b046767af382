#include "threads.h"

#include <omp.h>
#include <stdio.h>

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

double decaf_last_cache_bytes(void)
{
    static double bytes = 0.0;   /* (asked once; a race writes the same value) */
    if (bytes == 0.0) {
        /* the kernel's view (sysfs) first: a virtual machine's sysconf can report the whole
         * socket's L3 (256 MB on an EPYC whose cores share 32 MB) */
        const char *paths[] = {"/sys/devices/system/cpu/cpu0/cache/index3/size",
                               "/sys/devices/system/cpu/cpu0/cache/index2/size"};
        for (int i = 0; i < 2 && bytes == 0.0; ++i) {
            FILE *f = fopen(paths[i], "r");
            long kb = 0;
            if (f) {
                if (fscanf(f, "%ldK", &kb) != 1)
                    kb = 0;
                fclose(f);
            }
            if (kb > 0)
                bytes = 1024.0 * (double)kb;
        }
        if (bytes == 0.0)
            bytes = 16.0 * 1024 * 1024;
    }
    return bytes;
}
