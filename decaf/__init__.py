"""decaf: a CNN framework on the CPU (layer graph, compiled kernels, pretrained nets, DeCAF features)."""
__version__ = "0.1.0"

from .blob import Blob, Param  # noqa: E402,F401
from .errors import ShapeError, SpecError  # noqa: E402,F401
from .net import Net  # noqa: E402,F401
from .io.netfile import load, save  # noqa: E402,F401
from .kernels import get_backend, set_backend  # noqa: E402,F401
# decaf.threads reads DECAF_NUM_THREADS when imported; decaf.kernels asks decaf.blas for its SGEMM itself
from .threads import get_num_threads, set_num_threads  # noqa: E402,F401
from .profile import profile  # noqa: E402,F401
from .features import extract  # noqa: E402,F401
