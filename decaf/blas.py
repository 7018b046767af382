"""The single place decaf calls a matrix multiply (SGEMM) from.

``gemm(a, b, out)`` computes out = a @ b for 2-D arrays (transposed views
allowed). It uses NumPy's BLAS (OpenBLAS in the PyPI wheels) through
``numpy.matmul(..., out=...)``, which writes straight into ``out`` without
allocating. See docs/performance.md for the measurements behind this choice.
"""
import numpy as np


def gemm(a, b, out):
    return np.matmul(a, b, out=out)


def blas_info():
    """A short description of the BLAS in use, for the profiler and benchmarks."""
    try:
        from threadpoolctl import threadpool_info
        libs = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(libs) or "unknown"
    except Exception:  # threadpoolctl missing or confused: still report something
        return "numpy"
