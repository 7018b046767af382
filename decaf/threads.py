"""The one owner of decaf's thread count: the OpenMP threads of its compiled kernels and the BLAS threads.

    decaf.set_num_threads(2)          # both, from now on
    with decaf.threads.using_threads(1):
        ...                           # both, for a while; then both as they were

``DECAF_NUM_THREADS`` is read once, when this module is imported (``import decaf`` does). The
BLAS is reached through threadpoolctl, which knows OpenBLAS, MKL and BLIS; decaf's own OpenBLAS
(decaf.blas) is among the libraries it finds, but the kernels put that one back to one thread before
calling it from their own threads, so only NumPy's BLAS follows the setting.
"""
import contextlib
import os

from .errors import ConfigError
from .kernels import _compiled


def _checked(n):
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    return n


def set_num_threads(n):
    """Use n threads (>= 1) in decaf's kernels and in the BLAS, in every Python thread."""
    n = _checked(n)
    if _compiled is not None:
        _compiled.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # threadpoolctl is a dependency; without it only decaf's loops follow
        return
    threadpool_limits(n, user_api="blas")


def _blas_threads():
    """NumPy's BLAS threads (None when unknown): decaf's own OpenBLAS is left out, see above."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"
              and "scipy_openblas32" not in str(i.get("filepath", ""))]
    return counts[0] if counts else None


def get_num_threads():
    """(decaf's kernel threads, NumPy's BLAS threads or None when unknown)."""
    return (_compiled.get_num_threads() if _compiled is not None else 1), _blas_threads()


@contextlib.contextmanager
def using_threads(n):
    """Run with n threads for decaf's kernels and the BLAS, then restore both (None: leave both as
    they are)."""
    if n is None:
        yield
        return
    n = _checked(n)
    before = _compiled.get_num_threads() if _compiled is not None else None
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(limits=n, user_api="blas")   # restores each library on exit
    except ImportError:
        blas = contextlib.nullcontext()
    if _compiled is not None:
        _compiled.set_num_threads(n)
    try:
        with blas:
            yield
    finally:
        if before is not None:
            _compiled.set_num_threads(before)


def _from_environment():
    value = os.environ.get("DECAF_NUM_THREADS", "").strip()
    if not value:
        return
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"DECAF_NUM_THREADS={value!r} is not an integer") from None
    if n < 1:
        raise ConfigError(f"DECAF_NUM_THREADS={value!r}: the thread count must be >= 1")
    set_num_threads(n)


_from_environment()
