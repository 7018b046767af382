"""decaf's hot loops, behind one switch.

Each kernel exists twice with one signature and one contract: ``reference`` (plain NumPy, the
math to read; accepts float32 and float64) and ``_compiled`` (C + OpenMP, float32 only). The
functions of this module call the implementation of the current backend:

    set_backend("numpy")      # or "compiled"; the default comes from $DECAF_BACKEND
    with using_backend("numpy"):
        ...                   # e.g. a float64 gradient check

Every kernel writes into output arrays the caller allocated (NCHW, C-contiguous) and returns
None. Geometry arguments: kernel=(kh, kw), stride=(sh, sw), dilation=(dh, dw),
pads=(pad_top, pad_left, pad_bottom, pad_right); output sizes are implied by the output arrays
(or given as out_hw for im2col/col2im). Bad dtypes, shapes or layouts raise ValueError.

This module owns one runtime decision, the backend. The others it asks of their owners: the
thread count is decaf.threads's (``decaf.set_num_threads``), the instruction set variant of the
compiled kernels is decaf.cpu's (``$DECAF_ISA``, imported with this package), and the SGEMM that
the convolution kernels call is decaf.blas's, asked once, on the first such call.
"""
import contextlib
import functools
import os
import warnings

import numpy as np

# OpenMP's threads spin a little after each parallel loop, then sleep: that is 8-11 % faster on
# CaffeNet than sleeping at once (OMP_WAIT_POLICY=PASSIVE, which decaf set when its GEMMs ran on
# OpenBLAS's own threads). GNU OpenMP spins 300,000 rounds by default, several milliseconds here,
# which a process doing other work after a forward pass pays for; 10,000 rounds (about 0.2 ms)
# were as fast between layers. On a machine where other processes keep cores busy, spinning costs
# instead (0 rounds ran MobileNetV2 up to 3x faster there, 4-40 % slower on a quiet machine:
# benchmarks/bench_wait_policy.py). Must be set before the OpenMP runtime starts. Only when the
# user set neither: GNU OpenMP lets GOMP_SPINCOUNT override OMP_WAIT_POLICY, so setting it under a
# user's OMP_WAIT_POLICY=passive would undo their choice. See docs/performance.md.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

from ..errors import ConfigError
from . import reference

try:
    from . import _compiled
except ImportError as error:  # not built, or built for another Python / machine
    _compiled = None
    _compiled_error = f"{type(error).__name__}: {error}"
else:
    _compiled_error = None

# The instruction set variant of the compiled kernels (generic / avx2 / avx512) is decaf.cpu's
# decision, made when it is imported: from CPUID, or $DECAF_ISA.
from .. import cpu  # noqa: E402,F401

_FLOAT64 = np.dtype(np.float64)
BACKENDS = ("compiled", "numpy")
_impl = reference


def set_backend(name):
    """Use the "compiled" or the "numpy" (reference) kernels from now on."""
    global _impl
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {BACKENDS}")
    if name == "compiled" and _compiled is None:
        raise RuntimeError(f"the compiled kernels are not available ({_compiled_error}); "
                           "build them with `pip install -e .` (or `python setup.py build_ext --inplace` with Cython "
                           "installed) or use 'numpy'")
    _impl = _compiled if name == "compiled" else reference


def plan_key():
    """What a convolution's plan depends on besides its shapes: (backend, threads, instruction set).
    A caller may keep conv_packing's and conv_work_size's answers while this stays the same."""
    if _impl is _compiled:
        return ("compiled", _compiled.get_num_threads(), _compiled.isa_current())
    return ("numpy",)


def get_backend():
    """"compiled" or "numpy"."""
    return "compiled" if _impl is _compiled else "numpy"


@contextlib.contextmanager
def using_backend(name):
    """Temporarily switch backend: ``with using_backend("numpy"): ...``."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_num_threads(n):
    """The same as decaf.set_num_threads (decaf.threads owns the thread count), for older callers."""
    from .. import threads  # decaf.threads imports this package: asked when called, not at import
    threads.set_num_threads(n)


def _init_from_environment():
    name = os.environ.get("DECAF_BACKEND", "compiled").strip().lower() or "compiled"
    if name not in BACKENDS:
        raise ConfigError(f"DECAF_BACKEND={name!r} is not one of {BACKENDS}")
    if name == "compiled" and _compiled is None:
        warnings.warn(f"decaf: compiled kernels unavailable ({_compiled_error}); "
                      "using the slow NumPy reference kernels", RuntimeWarning, stacklevel=3)
        name = "numpy"
    set_backend(name)


def _for(array):
    """The implementation for this array: float64 (gradient checks) always uses the reference."""
    return reference if array.dtype == _FLOAT64 else _impl


@functools.cache
def _have_own_blas():
    """decaf.blas's answer, asked once. decaf.blas loads its OpenBLAS into this package's _compiled
    when it is imported, so it is imported here, on the first GEMM-based kernel call, rather than at
    this module's import (which it needs done first)."""
    from .. import blas
    return blas.have_own_blas()


def _for_gemm(array):
    """As _for, for kernels that also need the BLAS decaf loads (decaf.blas): without it, the reference."""
    impl = _for(array)
    return impl if impl is reference or _have_own_blas() else reference


# ---- the kernels (see reference.py for the math of each) -------------------------------------

def im2col(x, cols, kernel, stride, pads, dilation, out_hw):
    """x (B, C, H, W) -> cols (C*kh*kw, B*Ho*Wo); row (c*kh + i)*kw + j, column b*Ho*Wo + oh*Wo + ow."""
    _for(x).im2col(x, cols, kernel, stride, pads, dilation, out_hw)


def col2im(cols, x, kernel, stride, pads, dilation, out_hw):
    """Adjoint of im2col: x is zeroed, then accumulates every cols entry (padding dropped)."""
    _for(cols).col2im(cols, x, kernel, stride, pads, dilation, out_hw)


def max_pool_forward(x, y, argmax, kernel, stride, pads):
    """y = window max over real pixels; argmax (int32) = h*W + w, first max wins on ties."""
    _for(x).max_pool_forward(x, y, argmax, kernel, stride, pads)


def max_pool_values(x, y, kernel, stride, pads):
    """The maxima of max_pool_forward without argmax (inference); a NaN in a window gives NaN."""
    _for(x).max_pool_values(x, y, kernel, stride, pads)


def max_pool_backward(dy, argmax, dx):
    """dx is zeroed, then dx[b, c].flat[argmax] += dy."""
    _for(dy).max_pool_backward(dy, argmax, dx)


def avg_pool_forward(x, y, kernel, stride, pads, count_include_pad):
    """y = window sum of real pixels / divisor (padded window if count_include_pad, else real pixels)."""
    _for(x).avg_pool_forward(x, y, kernel, stride, pads, count_include_pad)


def avg_pool_backward(dy, dx, kernel, stride, pads, count_include_pad):
    """Adjoint of avg_pool_forward (dx is zeroed first)."""
    _for(dy).avg_pool_backward(dy, dx, kernel, stride, pads, count_include_pad)


def lrn_forward(x, y, scale, local_size, alpha, beta, k):
    """Across-channel LRN (Caffe/ONNX window [c-(n-1)//2, c+n//2]); fills y and scale."""
    _for(x).lrn_forward(x, y, scale, local_size, alpha, beta, k)


def lrn_backward(x, y, scale, dy, dx, local_size, alpha, beta):
    """Gradient of lrn_forward into dx (overwritten)."""
    _for(x).lrn_backward(x, y, scale, dy, dx, local_size, alpha, beta)


def depthwise_conv_forward(x, w, y, stride, pads, dilation, bias=None, relu=0.0, act=None, residual=None,
                           relu_out=None, means=None):
    """y[b, c] = x[b, c] cross-correlated with w[c, 0] (w is (C, 1, kh, kw)), + bias[c] if given,
    + residual; then min(max(., 0), relu) if relu > 0, or the activation act (see conv_forward),
    in y or into relu_out; means (B, C, 1, 1), if given: each plane's mean of that result."""
    _for(x).depthwise_conv_forward(x, w, y, stride, pads, dilation, bias, relu, act, residual, relu_out, means)


class _Prepared:
    """A kernel call with its arguments bound: ``run()`` makes it (the reference backend's stand-in
    for the compiled ConvForward and DepthwiseForward, which also check the arguments once)."""
    __slots__ = ("func", "args", "kwargs")

    def __init__(self, func, *args, **kwargs):
        self.func, self.args, self.kwargs = func, args, kwargs

    def run(self):
        self.func(*self.args, **self.kwargs)


def prepare_depthwise_conv_forward(x, w, y, stride, pads, dilation, bias=None, relu=0.0, act=None, residual=None,
                                   relu_out=None, means=None):
    """depthwise_conv_forward's call, checked now and made by the result's ``run()`` (as often as
    needed, from what the arrays then hold). The arrays must stay the same ones (not reallocated).
    means: None, or (B, C, 1, 1): each output plane's mean after the activation (global average
    pooling of the output, computed as each plane is finished)."""
    impl = _for(x)
    args = (x, w, y, stride, pads, dilation, bias, relu, act, residual, relu_out, means)
    if impl is reference:
        return _Prepared(reference.depthwise_conv_forward, *args)
    return impl.DepthwiseForward(*args)


def depthwise_conv_backward(x, w, dy, dx, dw, stride, pads, dilation):
    """dx zeroed then filled, dw overwritten (summed over the batch); pass None to skip either."""
    _for(x).depthwise_conv_backward(x, w, dy, dx, dw, stride, pads, dilation)


def channel_affine(x, scale, shift, y, act=None, act_out=None):
    """y = x * scale[c] + shift[c] for x (B, C, H, W) and scale, shift (C,) (shift None: 0; y may be
    x: in place);
    then the activation act = (kind, lo, hi, alpha) (see conv_forward) in y, or into act_out (y
    keeping the values before it). BatchNorm at inference and Scale (csrc/channel_affine.c)."""
    _for(x).channel_affine(x, scale, shift, y, act, act_out)


def batchnorm_scale_shift(mean, var, weight, bias, eps, scale, shift):
    """BatchNorm's statistics as channel_affine's scale and shift (C,): scale = weight / sqrt(var +
    eps), shift = bias - scale mean (weight None: 1, bias None: 0)."""
    _for(scale).batchnorm_scale_shift(mean, var, weight, bias, eps, scale, shift)


def batchnorm_train_forward(x, gamma, beta, y, mean, var, eps, act=None, act_out=None):
    """BatchNorm with batch statistics: mean and var (C,) = the mean and biased variance of each
    channel of x (B, C, H, W); y = (x - mean) / sqrt(var + eps) * gamma + beta (gamma, beta None: 1,
    0); then the activation act in y, or into act_out (csrc/batchnorm.c)."""
    _for(x).batchnorm_train_forward(x, gamma, beta, y, mean, var, eps, act, act_out)


def batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, eps):
    """Its gradients, xhat recomputed from x, mean and var: dbeta = sum(dy), dgamma = sum(dy xhat),
    dx = gamma / sqrt(var + eps) (dy - dbeta / m - xhat dgamma / m) per channel (m = B H W values);
    dx, dgamma, dbeta None: not computed."""
    _for(x).batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, eps)


def sgd_step(w, v, g, lr, mu, decay, scale=1.0, nesterov=False):
    """One SGD step with momentum, in place, over flat arrays of one float dtype (g unchanged):
    g' = scale g + decay w; v_new = mu v + lr g'; w -= v_new (nesterov: w -= (1 + mu) v_new - mu v)."""
    _for(w).sgd_step(w, v, g, lr, mu, decay, scale, nesterov)


def transpose(x, y):
    """y[b] = x[b].T for x (B, M, N) and y (B, N, M), one float dtype, C-contiguous, apart."""
    _for(x).transpose(x, y)


def erf(x, y):
    """y = erf(x) for flat arrays of one float dtype (y may be x): the compiled kernel within 2.5e-7
    relative (|x| < 0.5) or absolute (elsewhere); the reference is SciPy's."""
    _for(x).erf(x, y)


def gelu(x, y):
    """y = x (1 + erf(x / sqrt 2)) / 2 (the exact GELU) for flat arrays of one float dtype (y may be
    x): the compiled kernel within 3e-7 max(1, |x|) absolute; the reference is SciPy's ndtr."""
    _for(x).gelu(x, y)


def layernorm(x, gamma, beta, eps, y, mean, inv_std):
    """Over axis 1 of x (outer, C, inner), C-contiguous: for each (o, i) the mean and biased variance
    of x[o, :, i] into mean and inv_std = 1 / sqrt(var + eps) ((outer, inner) each), and
    y = (x - mean) inv_std gamma[c] + beta[c] (gamma, beta (C,); y may be x). inner = H W: a
    LayerNorm over the channels of NCHW; inner = 1: over rows (csrc/layernorm.c)."""
    _for(x).layernorm(x, gamma, beta, eps, y, mean, inv_std)


def copy_count_nonfinite(src, dst):
    """dst[...] = src for flat arrays of one float dtype; returns how many values are NaN or inf."""
    return _for(src).copy_count_nonfinite(src, dst)


def conv_work_size(x, w, group, kernel, stride, pads, dilation, out_hw, backward=False, prepacked=False):
    """Floats of scratch space (a float array of at least this size, `work`) that conv_forward or
    (backward=True) conv_backward need with the current thread count; x and w are arrays.
    backward="weights": conv_backward(..., weights_only=True).
    prepacked: for a conv_forward given packed= weights (its plan may differ)."""
    return _for_gemm(x).conv_work_size(x.shape, w.shape, group, kernel, stride, pads, dilation, out_hw,
                                       backward, prepacked)


# conv_packing's kind is isa * 16 + form; the forms (csrc/conv.h DECAF_PACK_*)
PACK_DIRECT, PACK_WINOGRAD, PACK_GROUPED, PACK_POINTWISE = 1, 2, 3, 4


def conv_packing(x, w, group, kernel, stride, pads, dilation, out_hw):
    """(kind, floats) of the prepacked weights conv_forward reads for this geometry, thread count and
    instruction set: kind 0 when its plan packs nothing (and always with the numpy backend)."""
    return _for_gemm(x).conv_packing(x.shape, w.shape, group, kernel, stride, pads, dilation, out_hw)


def conv_pack(x, w, packed, group, kernel, stride, pads, dilation, out_hw):
    """Fill packed (a flat float array of conv_packing's size) with w in the form it names."""
    _for_gemm(x).conv_pack(x.shape, w, packed, group, kernel, stride, pads, dilation, out_hw)


def conv_forward(x, w, bias, y, work, kernel, stride, pads, dilation, group, relu=False, relu_out=None,
                 relu_max=float("inf"), act=None, residual=None, packed=None):
    """y = convolution of x (B, C, H, W) with w (K, C/group, kh, kw) + bias (K or None), +
    residual (an array shaped like y, not y itself: a fused residual add); then with relu,
    min(max(., 0), relu_max) (a ReLU, or a ReLU6 with relu_max = 6), or the activation
    act = (kind, lo, hi, alpha): kind "clamp" (min(max(., lo), hi)), "leaky" (slope alpha),
    "hardswish", "silu" (x sigmoid(alpha x)), "sigmoid", "hardsigmoid" (min(max(alpha x + lo, 0),
    hi)) or "gelu" (exact) -- in y, or into relu_out (y keeps the
    values before it). Direct, or im2col + GEMMs (csrc/conv.c, csrc/activation.h). packed: None, or
    (kind, array) from conv_packing and conv_pack for these weights (read instead of w's own layout;
    the caller keeps it in step with w)."""
    _for_gemm(x).conv_forward(x, w, bias, y, work, kernel, stride, pads, dilation, group, relu, relu_out,
                              relu_max, act, residual, packed)


def prepare_conv_forward(x, w, bias, y, work, kernel, stride, pads, dilation, group, relu=False, relu_out=None,
                         relu_max=float("inf"), act=None, residual=None, packed=None):
    """conv_forward's call, checked and planned now (for the current thread count) and made by the
    result's ``run()``, as often as needed, from what the arrays then hold: what a net's layer
    keeps between passes. The arrays must stay the same ones (not reallocated)."""
    impl = _for_gemm(x)
    args = (x, w, bias, y, work, kernel, stride, pads, dilation, group, relu, relu_out, relu_max, act, residual,
            packed)
    if impl is reference:
        return _Prepared(reference.conv_forward, *args)
    return impl.ConvForward(*args)


def conv_backward(x, w, dy, dx, dw, db, work, kernel, stride, pads, dilation, group, weights_only=False):
    """dw, db (None: no bias) overwritten with gradients summed over the batch; dx (None: skip)
    overwritten with the input gradient. weights_only: dw and db alone (dx None; work sized by
    conv_work_size(..., backward="weights")): the plan may pick Winograd for them."""
    _for_gemm(x).conv_backward(x, w, dy, dx, dw, db, work, kernel, stride, pads, dilation, group, weights_only)


_init_from_environment()
