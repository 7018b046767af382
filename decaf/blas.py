"""The single place decaf gets its matrix multiply (SGEMM) from, and the one answer to which it is
(``have_own_blas()``, ``blas_info()``).

decaf loads its own copy of OpenBLAS (the ``scipy-openblas32`` wheel, separate from NumPy's),
single-threaded, and hands its ``cblas_sgemm`` to the compiled kernels, which call it from inside
decaf's own OpenMP threads: convolution runs one image per thread (im2col + GEMM + bias with no
hand-over between thread pools), and ``gemm`` splits a large product over the threads. See
docs/performance.md for the measurements behind this choice.

Kernel choice: OpenBLAS picks its kernels from the CPU when it loads, and reads an override from
``OPENBLAS_CORETYPE``. decaf's copy ignores that variable (it configures NumPy's OpenBLAS; this
machine's environment sets it to Haswell, the AVX2 kernels, which run CaffeNet's GEMMs at half the
speed of the AVX-512 ones) and lets OpenBLAS detect the CPU, unless ``DECAF_OPENBLAS_CORETYPE``
names a core (e.g. ``Haswell``, ``SkylakeX``). ``DECAF_BLAS=numpy`` skips the loading and uses
``numpy.matmul`` everywhere (as do float64 arrays).

Importing this module loads the library (once) and hands it to the compiled kernels; decaf.kernels
asks ``have_own_blas()`` on its first GEMM-based call, so it works whatever was imported first.
"""
import ctypes
import importlib.util
import os

import numpy as np

from .kernels import _compiled

_lib = None          # the ctypes handle of decaf's OpenBLAS, when loaded
_load_error = None   # why it is not


def _load_openblas():
    """Load scipy-openblas32's OpenBLAS with decaf's kernel choice and one thread."""
    # Not `import scipy_openblas32`: that loads the library at once, under NumPy's settings.
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the scipy-openblas32 package is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "lib", "libscipy_openblas.so")
    saved = {key: os.environ.get(key) for key in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
    core = os.environ.get("DECAF_OPENBLAS_CORETYPE", "").strip()
    try:   # OpenBLAS reads these once, in its load-time constructor
        if core:
            os.environ["OPENBLAS_CORETYPE"] = core
        else:
            os.environ.pop("OPENBLAS_CORETYPE", None)
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    prefix = "scipy_"    # scipy-openblas32 prefixes every symbol
    lib.corename = getattr(lib, f"{prefix}openblas_get_corename")
    lib.corename.restype = ctypes.c_char_p
    def address(name):
        return ctypes.cast(getattr(lib, prefix + name), ctypes.c_void_p).value
    # The kernels set it back to one thread whenever something else (threadpoolctl) changed it.
    _compiled.set_sgemm(address("cblas_sgemm"), address("cblas_sgemv"), address("openblas_get_num_threads"),
                        address("openblas_set_num_threads"))
    return lib


def _init():
    global _lib, _load_error
    if os.environ.get("DECAF_BLAS", "").strip().lower() == "numpy":
        _load_error = "DECAF_BLAS=numpy"
    elif _compiled is None:
        _load_error = "the compiled kernels are not built"
    else:
        try:
            _lib = _load_openblas()
        except (ImportError, OSError, AttributeError) as error:
            _load_error = f"{type(error).__name__}: {error}"


def have_own_blas():
    """True when the compiled kernels have decaf's OpenBLAS to call (else they are not used for
    convolutions and products: decaf.kernels falls back to the reference, gemm to numpy.matmul)."""
    return _lib is not None


def gemm(a, b, out):
    """out = a @ b for 2-D arrays (transposed views allowed), without allocating."""
    if _lib is not None and out.dtype == np.float32 and a.dtype == np.float32 and b.dtype == np.float32 \
            and out.flags.c_contiguous:
        _compiled.gemm(a, b, out)
        return out
    return np.matmul(a, b, out=out)


def blas_threads():
    """The thread count of decaf's own OpenBLAS (1: the kernels call it from each of decaf's
    threads), or None when it is not loaded."""
    if _lib is None:
        return None
    return int(_lib.scipy_openblas_get_num_threads())


def blas_info():
    """A short description of the BLAS decaf's kernels use, for the profiler and benchmarks."""
    if _lib is not None:
        from importlib.metadata import version
        return (f"OpenBLAS {version('scipy-openblas32')} (scipy-openblas32, "
                f"{_lib.corename().decode()} kernels, called from decaf's threads)")
    try:
        from threadpoolctl import threadpool_info
        libs = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernels)"
                for i in threadpool_info() if i.get("user_api") == "blas"]
        return f"numpy.matmul: {', '.join(libs) or 'unknown'} ({_load_error})"
    except Exception:  # threadpoolctl missing or confused: still report something
        return f"numpy.matmul ({_load_error})"


_init()
