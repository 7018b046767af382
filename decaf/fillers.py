"""Weight initialisation, seeded through the numpy Generator passed in.

A filler spec is a dict such as ``{"type": "gaussian", "std": 0.01}``.
fan_in = prod(shape[1:]) and fan_out = shape[0] * prod(shape[2:]).

* ``constant``: value (default 0)
* ``gaussian``: N(mean, std^2) (defaults 0, 0.01)
* ``uniform``:  U(min, max)
* ``xavier``:   U(-a, a), a = sqrt(3 / n) with n = fan_in ("variance_norm": "fan_in",
  the Caffe default), fan_out, or the average of both ("average", Glorot)
* ``msra``:     N(0, 2 / n) with n chosen the same way (He et al.)
"""
import numpy as np

from .errors import SpecError


def _fans(shape):
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    fan_out = int(shape[0]) * receptive
    return fan_in, fan_out


def _norm(spec, shape):
    fan_in, fan_out = _fans(shape)
    mode = spec.get("variance_norm", "fan_in")
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "average":
        return (fan_in + fan_out) / 2.0
    raise SpecError(f"filler variance_norm must be fan_in, fan_out or average, got {mode!r}")


def fill(array, spec, rng):
    """Fill ``array`` in place following ``spec`` (no-op when ``rng`` is None: weights come from a file)."""
    if rng is None:
        return array
    spec = dict(spec or {"type": "constant"})
    kind = spec.get("type", "constant")
    shape = array.shape
    if kind == "constant":
        array[...] = spec.get("value", 0.0)
    elif kind == "gaussian":
        array[...] = rng.normal(spec.get("mean", 0.0), spec.get("std", 0.01), shape)
    elif kind == "uniform":
        array[...] = rng.uniform(spec.get("min", 0.0), spec.get("max", 1.0), shape)
    elif kind == "xavier":
        a = np.sqrt(3.0 / _norm(spec, shape))
        array[...] = rng.uniform(-a, a, shape)
    elif kind == "msra":
        array[...] = rng.normal(0.0, np.sqrt(2.0 / _norm(spec, shape)), shape)
    else:
        raise SpecError(f"unknown filler type {kind!r} (constant, gaussian, uniform, xavier, msra)")
    return array
