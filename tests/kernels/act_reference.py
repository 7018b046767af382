"""The epilogue's activations (csrc/activation.h) from their definitions, in float64: the reference
the kernel tests of this folder compare against."""
import numpy as np


def act_f64(v, act):
    """act = (kind, lo, hi, alpha) as the kernels take it (None: none) applied to v, in float64."""
    v = np.asarray(v, np.float64)
    if act is None:
        return v
    kind, lo, hi, alpha = act
    with np.errstate(over="ignore"):             # exp(large) = inf: the tails are 0 and 1
        if kind == "clamp":
            return np.minimum(np.maximum(v, lo), hi)
        if kind == "leaky":
            return np.where(v < 0, alpha * v, v)
        if kind == "hardswish":
            return v * np.clip(v + 3, 0, 6) / 6
        if kind == "silu":
            return v / (1 + np.exp(-alpha * v))
        if kind == "sigmoid":
            return 1 / (1 + np.exp(-v))
        if kind == "hardsigmoid":
            return np.clip(alpha * v + lo, 0, hi)
        if kind == "gelu":                       # exact: v Phi(v), Phi the normal distribution
            from scipy.special import ndtr
            return v * ndtr(v)
    raise AssertionError(f"unknown activation {kind!r}")
