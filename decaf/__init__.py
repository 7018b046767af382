"""decaf: a CNN framework on the CPU (layer graph, compiled kernels, pretrained nets, DeCAF features)."""
__version__ = "0.1.0"

from .blob import Blob, Param  # noqa: E402,F401
from .errors import ShapeError, SpecError  # noqa: E402,F401
from .net import Net  # noqa: E402,F401
from .io.netfile import load, save  # noqa: E402,F401
