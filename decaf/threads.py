"""One thread setting for the BLAS and decaf's own compiled loops.

``decaf.set_num_threads(n)`` (or the environment variable ``DECAF_NUM_THREADS``
read at import) sets both the OpenMP threads of decaf's kernels and the BLAS
threads (through threadpoolctl, which knows OpenBLAS, MKL and BLIS).
"""
import os

from . import kernels


def set_num_threads(n):
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    kernels.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n, user_api="blas")
    except ImportError:   # threadpoolctl is a dependency; without it only decaf's loops follow
        pass


def get_num_threads():
    """(decaf's threads, NumPy's BLAS threads)."""
    blas = None
    try:
        from threadpoolctl import threadpool_info
        # NumPy's BLAS: decaf's own OpenBLAS (decaf.blas) always runs single-threaded inside
        # decaf's threads, so it is left out
        counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"
                  and "scipy_openblas32" not in str(i.get("filepath", ""))]
        blas = counts[0] if counts else None
    except ImportError:
        pass
    return kernels.get_num_threads(), blas


def init_from_environment():
    value = os.environ.get("DECAF_NUM_THREADS", "").strip()
    if value:
        set_num_threads(int(value))
