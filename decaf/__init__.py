"""decaf: a CNN framework on the CPU (layer graph, compiled kernels, pretrained nets, DeCAF features)."""
__version__ = "0.1.0"

from .errors import ConfigError, ConfigRuntimeError, ShapeError, SpecError  # noqa: E402,F401

try:   # decaf.kernels, decaf.cpu and decaf.threads read DECAF_BACKEND, DECAF_ISA, DECAF_NUM_THREADS here
    from .kernels import get_backend, set_backend  # noqa: E402,F401
    from .threads import get_num_threads, set_num_threads  # noqa: E402,F401
except (ConfigError, ConfigRuntimeError) as _error:
    import os as _os
    import sys as _sys
    if _os.path.basename(_sys.argv[0] or "") == "decaf":   # the command: one line, exit 2
        print(f"decaf: error: {_error}", file=_sys.stderr)
        raise SystemExit(2) from None
    raise

from .blob import Blob, Param  # noqa: E402,F401
from .net import Net  # noqa: E402,F401
from .io.netfile import load, save  # noqa: E402,F401
from .profile import profile  # noqa: E402,F401
from .features import extract  # noqa: E402,F401
