"""decaf: a CNN framework on the CPU (layer graph, compiled kernels, pretrained nets, DeCAF features)."""
__version__ = "0.1.0"

from .blob import Blob, Param  # noqa: E402,F401
from .errors import ShapeError, SpecError  # noqa: E402,F401
from .net import Net  # noqa: E402,F401
from .io.netfile import load, save  # noqa: E402,F401
from .kernels import get_backend, set_backend  # noqa: E402,F401
from . import blas  # noqa: E402,F401  (loads decaf's OpenBLAS for the compiled kernels, at import)
from .threads import get_num_threads, set_num_threads  # noqa: E402,F401
from .threads import init_from_environment as _threads_from_env  # noqa: E402

_threads_from_env()
from .profile import profile  # noqa: E402,F401
from .features import extract  # noqa: E402,F401
