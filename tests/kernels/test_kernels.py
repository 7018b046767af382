"""decaf.kernels: compiled == reference, reference == an independent implementation (PyTorch),
backward == finite differences / adjoint, and the backend and thread switches.

Tolerances (float32): "exact" where both sides do the same float operations in the same order
(copies, max, sums over the kernel offsets in row-major order); rtol = atol = 1e-5 where the
summation order differs (backward scatters, LRN's running window sum, weight gradients, GEMMs,
the AVX2 depthwise strips, which sum each window row with FMAs).
"""
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import decaf.kernels as kernels
from decaf import cpu
from decaf.kernels import reference
from decaf.threads import get_num_threads, using_threads

from depthwise_order import sums_like_reference

try:
    from decaf.kernels import _compiled
except ImportError:  # not built: the compiled == reference tests are skipped
    _compiled = None

needs_compiled = pytest.mark.skipif(_compiled is None, reason="decaf.kernels._compiled is not built")
TOL = dict(rtol=1e-5, atol=1e-5)
SEEDS = range(40)


# ---- geometry --------------------------------------------------------------------------------

def out_size(size, k, stride, pad_begin, pad_end, dilation=1, ceil_mode=False):
    """Output length, PyTorch's rule: in ceil mode the last window must start inside the image or
    its leading padding."""
    span = size + pad_begin + pad_end - dilation * (k - 1) - 1
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    n = -(-span // stride) + 1
    return n - 1 if (n - 1) * stride >= size + pad_begin else n


@dataclass
class Geometry:
    B: int
    C: int
    H: int
    W: int
    kernel: tuple
    stride: tuple
    pads: tuple  # (top, left, bottom, right)
    dilation: tuple
    out_hw: tuple
    ceil_mode: bool

    @property
    def x_shape(self):
        return (self.B, self.C, self.H, self.W)

    @property
    def y_shape(self):
        return (self.B, self.C) + self.out_hw

    @property
    def torch_pad(self):  # F.pad order: (left, right, top, bottom)
        top, left, bottom, right = self.pads
        return (left, right, top, bottom)


def random_geometry(seed, dilation=True, torch_pool=False, overhang=True):
    """A random small geometry: batch 1..3, odd sizes, strides, asymmetric pads, dilation, ceil
    mode. torch_pool: symmetric pads <= kernel // 2 (what torch's pooling accepts). overhang:
    sometimes ask for one more output than the formula, so windows hang off the padded image."""
    rng = np.random.default_rng(seed)
    while True:
        B, C = int(rng.choice([1, 1, 2, 3])), int(rng.integers(1, 6))
        H, W = (int(v) for v in rng.integers(1, 12, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2)) if dilation else (1, 1)
        if torch_pool:
            ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
            pads = (ph, pw, ph, pw)
        else:
            pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        ceil_mode = bool(rng.random() < 0.5)
        Ho = out_size(H, kh, sh, pads[0], pads[2], dh, ceil_mode)
        Wo = out_size(W, kw, sw, pads[1], pads[3], dw, ceil_mode)
        if overhang and rng.random() < 0.2:
            Ho, Wo = Ho + 1, Wo + int(rng.integers(0, 2))
        if Ho >= 1 and Wo >= 1:
            return Geometry(B, C, H, W, (kh, kw), (sh, sw), pads, (dh, dw), (Ho, Wo), ceil_mode)


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def call(impl, name, inputs, outputs, params):
    """Run kernel `name` of `impl`. Outputs are created full of garbage (NaN, or -7 for int32) so
    the kernel must write every element. Returns the outputs."""
    outs = [np.full(shape, -7 if dtype == np.int32 else np.nan, dtype=dtype) for shape, dtype in outputs]
    getattr(impl, name)(*inputs, *outs, *params)
    return outs


def both(name, inputs, outputs, params):
    return call(_compiled, name, inputs, outputs, params), call(reference, name, inputs, outputs, params)


F32 = np.float32


def assert_depthwise_equal(c, r, kernel, stride, dilation):
    """Exact, but within TOL for the shapes the AVX2 path sums with FMAs (depthwise_order.py)."""
    if sums_like_reference(cpu.get_isa(), kernel, stride, dilation):
        np.testing.assert_array_equal(c, r)  # same products summed in the same order: exact
    else:
        np.testing.assert_allclose(c, r, rtol=1e-5, atol=1e-5 * max(float(np.abs(r).max()), 1.0))


# ---- compiled == reference -------------------------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("seed", SEEDS)
def test_im2col_col2im_match_reference(seed):
    g = random_geometry(seed)
    rng = np.random.default_rng(seed)
    x = randn(rng, g.x_shape)
    rows, ncols = g.C * g.kernel[0] * g.kernel[1], g.B * g.out_hw[0] * g.out_hw[1]
    params = (g.kernel, g.stride, g.pads, g.dilation, g.out_hw)
    (c,), (r,) = both("im2col", [x], [((rows, ncols), F32)], params)
    np.testing.assert_array_equal(c, r)  # a copy: exact
    cols = randn(rng, (rows, ncols))
    (c,), (r,) = both("col2im", [cols], [(g.x_shape, F32)], params)
    np.testing.assert_array_equal(c, r)  # same offsets order for every pixel: exact


@needs_compiled
@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool_matches_reference(seed):
    g = random_geometry(seed, dilation=False)
    rng = np.random.default_rng(seed)
    # Every other case draws from a few integers, so windows hold ties.
    x = randn(rng, g.x_shape) if seed % 2 else rng.integers(-2, 3, g.x_shape).astype(F32)
    params = (g.kernel, g.stride, g.pads)
    (cy, ca), (ry, ra) = both("max_pool_forward", [x], [(g.y_shape, F32), (g.y_shape, np.int32)], params)
    np.testing.assert_array_equal(cy, ry)
    np.testing.assert_array_equal(ca, ra)
    dy = randn(rng, g.y_shape)
    (c,), (r,) = both("max_pool_backward", [dy, ca], [(g.x_shape, F32)], ())
    np.testing.assert_array_equal(c, r)  # same scatter order: exact


@needs_compiled
@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool_values_match_reference_and_the_argmax_kernel(seed):
    g = random_geometry(seed, dilation=False)
    rng = np.random.default_rng(seed)
    x = randn(rng, g.x_shape)
    params = (g.kernel, g.stride, g.pads)
    (cy,), (ry,) = both("max_pool_values", [x], [(g.y_shape, F32)], params)
    np.testing.assert_array_equal(cy, ry)
    (ay, _), _ = both("max_pool_forward", [x], [(g.y_shape, F32), (g.y_shape, np.int32)], params)
    np.testing.assert_array_equal(cy, ay)                 # same maxima as the argmax kernel


@pytest.mark.parametrize("impl", [reference] + ([_compiled] if _compiled is not None else []),
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_max_pool_values_propagate_nan(impl):
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    y = np.empty((1, 1, 2, 2), F32)
    impl.max_pool_values(x, y, (2, 2), (2, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(y[0, 0], [[5, np.nan], [13, 15]])


@needs_compiled
@needs_compiled
@pytest.mark.parametrize("hw", [(8, 8), (7, 7), (112, 112), (9, 13)])
def test_global_avg_pool_against_a_float64_mean(hw):
    # whole-plane windows (squeeze-excitation, classifier heads) take 16 running sums: within float32
    # rounding of the exact mean (|x| <= 4 here, so 1e-6 absolute), on 1 and 2 threads
    rng = np.random.default_rng(hw[0])
    x = randn(rng, (3, 40) + hw)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    for threads in (1, 2):
        with using_threads(threads):
            y = np.full((3, 40, 1, 1), np.nan, np.float32)
            _compiled.avg_pool_forward(x, y, hw, (1, 1), (0, 0, 0, 0), False)
            np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_matches_reference(seed, count_include_pad):
    g = random_geometry(seed, dilation=False)
    rng = np.random.default_rng(seed)
    x = randn(rng, g.x_shape)
    params = (g.kernel, g.stride, g.pads, count_include_pad)
    (c,), (r,) = both("avg_pool_forward", [x], [(g.y_shape, F32)], params)
    # global pooling sums in 16 running sums (test_global_avg_pool_...); other windows sum the
    # columns down the window's rows first, then across (csrc/pool.c, avg_pool_plane), where the
    # reference sums the window row after row: equal within float32 rounding of the sums (|x| <= 5
    # here, windows of at most 49 values: 1e-6 absolute)
    np.testing.assert_allclose(c, r, rtol=1e-5, atol=1e-6)
    dy = randn(rng, g.y_shape)
    (c,), (r,) = both("avg_pool_backward", [dy], [(g.x_shape, F32)], params)
    np.testing.assert_allclose(c, r, **TOL)


@needs_compiled
@pytest.mark.parametrize("shape, k, s, pad", [((2, 7, 35, 35), 3, 1, 1), ((3, 5, 17, 17), 3, 1, 1),
                                              ((2, 6, 56, 56), 2, 2, 0), ((1, 4, 29, 31), 5, 3, 2)],
                         ids=["inception-35", "inception-17", "densenet-2x2", "odd-5x5-s3"])
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_layers_against_float64(shape, k, s, pad, include):
    # Inception-v3's 3x3 stride-1 pools, DenseNet's 2x2 stride-2 transitions and an odd window, on
    # 1 and 2 threads: within float32 rounding of the float64 means (the NumPy reference run in
    # float64; |x| <= 5: 1e-6 absolute)
    rng = np.random.default_rng(k * 10 + s)
    x = randn(rng, shape)
    B, C, H, W = shape
    want = np.zeros((B, C, (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1))
    reference.avg_pool_forward(x.astype(np.float64), want, (k, k), (s, s), (pad,) * 4, include)
    for threads in (1, 2):
        with using_threads(threads):
            y = np.full(want.shape, np.nan, F32)
            _compiled.avg_pool_forward(x, y, (k, k), (s, s), (pad,) * 4, include)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


@needs_compiled
@pytest.mark.parametrize("hw", [(2, 2), (2, 9), (8, 8), (5, 3), (35, 35)])
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_3x3_same_planes_keep_a_nan_in_its_windows(hw, include):
    # 3x3 stride-1 pools with pads 1 run over each plane in flat loops whose neighbours wrap into the
    # next row (csrc/pool.c, avg_pool_3x3_same); the row ends are redone. A NaN at the end of a row
    # reaches exactly the windows that hold it (none in the next row's first column, none in another
    # plane), the rest within float32 rounding of the float64 means (|x| <= 5: 1e-6 absolute).
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    x = randn(rng, (2, 3) + hw)
    r = hw[0] // 2
    x[1, 1, r, -1] = np.nan
    want = np.zeros(x.shape)
    reference.avg_pool_forward(x.astype(np.float64), want, (3, 3), (1, 1), (1,) * 4, include)
    holds = np.zeros(hw, bool)                       # the windows that hold (r, W - 1): rows r - 1 .. r + 1,
    holds[max(r - 1, 0):r + 2, hw[1] - 2:] = True    # columns W - 2 and W - 1
    np.testing.assert_array_equal(np.isnan(want[1, 1]), holds)
    assert np.isnan(want).sum() == holds.sum()
    for threads in (1, 2):
        with using_threads(threads):
            y = np.full(x.shape, 7.0, F32)
            _compiled.avg_pool_forward(x, y, (3, 3), (1, 1), (1,) * 4, include)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def random_lrn(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 12)), int(rng.integers(1, 7)), int(rng.integers(1, 40)))
    params = dict(local_size=int(rng.integers(1, 8)), alpha=float(rng.choice([1e-4, 0.1, 1.0])),
                  beta=float(rng.choice([0.75, 0.5, 1.3])), k=float(rng.choice([1.0, 2.0])))
    return rng, shape, params


@needs_compiled
@pytest.mark.parametrize("seed", SEEDS)
def test_lrn_matches_reference(seed):
    # HW up to 240 pixels spans one and two of the C code's 256-pixel blocks' edge cases.
    rng, shape, p = random_lrn(seed)
    x = randn(rng, shape)
    (cy, cs), (ry, rs) = both("lrn_forward", [x], [(shape, F32)] * 2,
                              (p["local_size"], p["alpha"], p["beta"], p["k"]))
    np.testing.assert_allclose(cs, rs, **TOL)
    np.testing.assert_allclose(cy, ry, **TOL)
    dy = randn(rng, shape)
    (c,), (r,) = both("lrn_backward", [x, ry, rs, dy], [(shape, F32)], (p["local_size"], p["alpha"], p["beta"]))
    np.testing.assert_allclose(c, r, **TOL)


@needs_compiled
def test_lrn_many_pixels_matches_reference():
    # Several 256-pixel blocks per image plus a partial one.
    rng = np.random.default_rng(1)
    shape = (2, 7, 23, 29)
    x = randn(rng, shape)
    (cy, cs), (ry, rs) = both("lrn_forward", [x], [(shape, F32)] * 2, (5, 1e-2, 0.75, 1.0))
    np.testing.assert_allclose(cy, ry, **TOL)
    dy = randn(rng, shape)
    (c,), (r,) = both("lrn_backward", [x, ry, rs, dy], [(shape, F32)], (5, 1e-2, 0.75))
    np.testing.assert_allclose(c, r, **TOL)


@needs_compiled
@pytest.mark.parametrize("seed", SEEDS)
def test_depthwise_conv_matches_reference(seed):
    g = random_geometry(seed)
    rng = np.random.default_rng(seed)
    x, w = randn(rng, g.x_shape), randn(rng, (g.C, 1) + g.kernel)
    params = (g.stride, g.pads, g.dilation)
    (c,), (r,) = both("depthwise_conv_forward", [x, w], [(g.y_shape, F32)], params)
    assert_depthwise_equal(c, r, g.kernel, g.stride, g.dilation)
    dy = randn(rng, g.y_shape)
    (cdx, cdw), (rdx, rdw) = both("depthwise_conv_backward", [x, w, dy],
                                  [(g.x_shape, F32), (w.shape, F32)], params)
    np.testing.assert_array_equal(cdx, rdx)
    np.testing.assert_allclose(cdw, rdw, **TOL)  # C sums in double, NumPy in float32


@pytest.mark.parametrize("impl", ["compiled", "numpy"])
def test_depthwise_conv_backward_skips_none(impl):
    if impl == "compiled" and _compiled is None:
        pytest.skip("decaf.kernels._compiled is not built")
    module = _compiled if impl == "compiled" else reference
    rng = np.random.default_rng(0)
    x, w, dy = randn(rng, (2, 3, 6, 5)), randn(rng, (3, 1, 3, 3)), randn(rng, (2, 3, 6, 5))
    params = ((1, 1), (1, 1, 1, 1), (1, 1))
    dx, dw = np.empty_like(x), np.empty_like(w)
    module.depthwise_conv_backward(x, w, dy, dx, dw, *params)
    only_dx, only_dw = np.full_like(x, np.nan), np.full_like(w, np.nan)
    module.depthwise_conv_backward(x, w, dy, only_dx, None, *params)
    module.depthwise_conv_backward(x, w, dy, None, only_dw, *params)
    np.testing.assert_array_equal(only_dx, dx)
    np.testing.assert_array_equal(only_dw, dw)


@needs_compiled
def test_max_pool_window_without_real_pixels():
    # pad 3 > kernel 2: the first window is all padding. Both give -inf and argmax -1.
    x = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    (cy, ca), (ry, ra) = both("max_pool_forward", [x], [((1, 1, 4, 4), F32), ((1, 1, 4, 4), np.int32)],
                              ((2, 2), (2, 2), (3, 3, 3, 3)))
    assert cy[0, 0, 0, 0] == -np.inf and ca[0, 0, 0, 0] == -1
    np.testing.assert_array_equal(cy, ry)
    np.testing.assert_array_equal(ca, ra)
    (c,), (r,) = both("max_pool_backward", [np.ones_like(cy), ca], [(x.shape, F32)], ())
    np.testing.assert_array_equal(c, r)


@needs_compiled
def test_thread_count_does_not_change_results():
    # Large enough (> 32k element operations) for the loops to actually run in parallel.
    rng = np.random.default_rng(0)
    x, w = randn(rng, (4, 8, 33, 31)), randn(rng, (8, 1, 3, 3))
    outs = []
    for n in (1, 2, 3):
        with using_threads(n):
            assert get_num_threads()[0] == n
            cols = np.empty((8 * 9, 4 * 33 * 31), F32)
            _compiled.im2col(x, cols, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (33, 31))
            y = np.empty_like(x)
            _compiled.depthwise_conv_forward(x, w, y, (1, 1), (1, 1, 1, 1), (1, 1))
            ly, ls = np.empty_like(x), np.empty_like(x)
            _compiled.lrn_forward(x, ly, ls, 5, 1e-3, 0.75, 1.0)
            dw = np.empty_like(w)
            _compiled.depthwise_conv_backward(x, w, y, None, dw, (1, 1), (1, 1, 1, 1), (1, 1))
            outs.append((cols, y, ly, dw))
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


# ---- argument checking -----------------------------------------------------------------------

def backends():
    return [reference] + ([_compiled] if _compiled is not None else [])


@pytest.mark.parametrize("impl", backends(), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_bad_arguments_raise_value_error(impl):
    x = np.zeros((1, 2, 5, 5), F32)
    good = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (5, 5))
    impl.im2col(x, np.zeros((18, 25), F32), *good)
    with pytest.raises(ValueError, match="cols"):
        impl.im2col(x, np.zeros((18, 24), F32), *good)  # wrong shape
    with pytest.raises(ValueError):
        impl.im2col(x, np.zeros((18, 25), np.float16), *good)  # wrong dtype
    with pytest.raises(ValueError):
        impl.im2col(x, np.zeros((25, 18), F32).T, *good)  # not C-contiguous
    with pytest.raises(ValueError):
        impl.im2col(x, np.zeros((18, 25), F32), (3, 3), (0, 1), (1, 1, 1, 1), (1, 1), (5, 5))  # stride 0
    with pytest.raises(ValueError):
        impl.im2col(x, np.zeros((18, 25), F32), (3, 3), (1, 1), (1, 1, 1), (1, 1), (5, 5))  # 3 pads
    with pytest.raises(ValueError):  # int64 argmax (Cython's message does not name the argument)
        impl.max_pool_forward(x, np.zeros((1, 2, 2, 2), F32), np.zeros((1, 2, 2, 2), np.int64),
                              (2, 2), (2, 2), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="w"):
        impl.depthwise_conv_forward(x, np.zeros((2, 2, 3, 3), F32), np.zeros((1, 2, 3, 3), F32),
                                    (1, 1), (0, 0, 0, 0), (1, 1))
    with pytest.raises(ValueError, match="dx"):
        impl.lrn_backward(x, x, x, x, np.zeros((1, 2, 5, 4), F32), 3, 1e-4, 0.75)


@needs_compiled
def test_compiled_refuses_float64_and_accepts_readonly_inputs():
    x = np.zeros((1, 2, 5, 5))
    with pytest.raises(ValueError):
        _compiled.lrn_forward(x, np.zeros_like(x), np.zeros_like(x), 3, 1e-4, 0.75, 1.0)
    w = np.ones((2, 1, 3, 3), F32)
    w.flags.writeable = False  # e.g. weights memory-mapped from a .decaf file
    x = np.ones((1, 2, 5, 5), F32)
    x.flags.writeable = False
    y = np.empty((1, 2, 3, 3), F32)
    _compiled.depthwise_conv_forward(x, w, y, (1, 1), (0, 0, 0, 0), (1, 1))
    np.testing.assert_array_equal(y, 9)


# ---- backward == finite differences / adjoint (float64 reference) ------------------------------

@pytest.mark.parametrize("local_size", [1, 2, 3, 4, 5])
def test_lrn_backward_finite_differences(local_size):
    rng = np.random.default_rng(local_size)
    shape = (2, 6, 2, 3)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    alpha, beta, k = 0.7, 0.75, 1.5  # alpha large so the cross-channel term matters

    def loss(x):
        y, scale = np.empty(shape), np.empty(shape)
        reference.lrn_forward(x, y, scale, local_size, alpha, beta, k)
        return np.sum(g * y), y, scale

    _, y, scale = loss(x)
    dx = np.empty(shape)
    reference.lrn_backward(x, y, scale, g, dx, local_size, alpha, beta)
    numeric, eps = np.empty(shape), 1e-6
    for index in np.ndindex(shape):
        step = np.zeros(shape)
        step[index] = eps
        numeric[index] = (loss(x + step)[0] - loss(x - step)[0]) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(10))
def test_backwards_are_adjoints(seed):
    """<forward(x), g> == <x, backward(g)> for the linear kernels, in float64, including the
    asymmetric pads and ceil-mode overhangs torch cannot express."""
    g = random_geometry(seed + 1000)
    rng = np.random.default_rng(seed)
    f64 = np.float64
    x = rng.standard_normal(g.x_shape)
    # im2col / col2im
    cols = np.empty((g.C * g.kernel[0] * g.kernel[1], g.B * g.out_hw[0] * g.out_hw[1]))
    params = (g.kernel, g.stride, g.pads, g.dilation, g.out_hw)
    reference.im2col(x, cols, *params)
    c = rng.standard_normal(cols.shape)
    back = np.empty(g.x_shape)
    reference.col2im(c, back, *params)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-10)
    # average pooling, both divisors
    for include in (False, True):
        y, dy = np.empty(g.y_shape, f64), rng.standard_normal(g.y_shape)
        reference.avg_pool_forward(x, y, g.kernel, g.stride, g.pads, include)
        reference.avg_pool_backward(dy, back, g.kernel, g.stride, g.pads, include)
        np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, back), rtol=1e-10)
    # depthwise: linear in x and in w
    w, dy = rng.standard_normal((g.C, 1) + g.kernel), rng.standard_normal(g.y_shape)
    y, dw = np.empty(g.y_shape), np.empty(w.shape)
    reference.depthwise_conv_forward(x, w, y, g.stride, g.pads, g.dilation)
    reference.depthwise_conv_backward(x, w, dy, back, dw, g.stride, g.pads, g.dilation)
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(x, back), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(y, dy), np.vdot(w, dw), rtol=1e-10)


# ---- reference == PyTorch --------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def tensor(torch, a, grad=False):
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(grad)  # a copy: no negative strides


@pytest.mark.parametrize("seed", range(20))
def test_im2col_and_col2im_against_torch(torch, seed):
    F = torch.nn.functional
    g = random_geometry(seed + 2000, overhang=False)
    rng = np.random.default_rng(seed)
    x = randn(rng, g.x_shape)
    xp = F.pad(tensor(torch, x), g.torch_pad)
    kw = dict(kernel_size=g.kernel, dilation=g.dilation, stride=g.stride)
    unfolded = F.unfold(xp, **kw)  # (B, C*kh*kw, L), rows in the same (c, i, j) order
    # torch's L follows the floor rule; ceil-mode outputs beyond it read only padding.
    Ho = out_size(g.H, g.kernel[0], g.stride[0], g.pads[0], g.pads[2], g.dilation[0])
    Wo = out_size(g.W, g.kernel[1], g.stride[1], g.pads[1], g.pads[3], g.dilation[1])
    rows = g.C * g.kernel[0] * g.kernel[1]
    cols = np.empty((rows, g.B * Ho * Wo), F32)
    reference.im2col(x, cols, g.kernel, g.stride, g.pads, g.dilation, (Ho, Wo))
    np.testing.assert_array_equal(cols, unfolded.numpy().transpose(1, 0, 2).reshape(rows, -1))

    # conv2d = weights @ cols
    K = 4
    w = randn(rng, (K, g.C) + g.kernel)
    y = (w.reshape(K, -1) @ cols).reshape(K, g.B, Ho, Wo).transpose(1, 0, 2, 3)
    expected = F.conv2d(xp, tensor(torch, w), stride=g.stride, dilation=g.dilation)
    np.testing.assert_allclose(y, expected.numpy(), **TOL)

    # col2im is fold (the adjoint of unfold) with the padding cropped away
    c = randn(rng, cols.shape)
    x_back = np.empty(g.x_shape, F32)
    reference.col2im(c, x_back, g.kernel, g.stride, g.pads, g.dilation, (Ho, Wo))
    folded = F.fold(tensor(torch, c.reshape(rows, g.B, Ho * Wo).transpose(1, 0, 2)),
                    output_size=xp.shape[2:], **kw)
    top, left = g.pads[:2]
    np.testing.assert_allclose(x_back, folded.numpy()[:, :, top:top + g.H, left:left + g.W], **TOL)


@pytest.mark.parametrize("seed", range(20))
def test_max_pool_against_torch(torch, seed):
    F = torch.nn.functional
    g = random_geometry(seed + 3000, dilation=False, torch_pool=True, overhang=False)
    rng = np.random.default_rng(seed)
    # Half the cases have ties: torch also keeps the first maximum in row-major order.
    x = randn(rng, g.x_shape) if seed % 2 else rng.integers(-2, 3, g.x_shape).astype(F32)
    y, argmax = np.empty(g.y_shape, F32), np.empty(g.y_shape, np.int32)
    reference.max_pool_forward(x, y, argmax, g.kernel, g.stride, g.pads)
    xt = tensor(torch, x, grad=True)
    yt, it = F.max_pool2d(xt, g.kernel, g.stride, g.pads[:2], ceil_mode=g.ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(argmax, it.numpy())
    dy = randn(rng, g.y_shape)
    yt.backward(tensor(torch, dy))
    dx = np.empty(g.x_shape, F32)
    reference.max_pool_backward(dy, argmax, dx)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("seed", range(10))
def test_max_pool_asymmetric_pads_against_torch(torch, seed):
    # Padding with -inf then pooling without padding gives the same maxima.
    F = torch.nn.functional
    g = random_geometry(seed + 4000, dilation=False, overhang=False)
    g.pads = tuple(min(p, k - 1) for p, k in zip(g.pads, g.kernel * 2))  # every window has a real pixel
    Ho = out_size(g.H, g.kernel[0], g.stride[0], g.pads[0], g.pads[2])
    Wo = out_size(g.W, g.kernel[1], g.stride[1], g.pads[1], g.pads[3])
    if Ho < 1 or Wo < 1:
        pytest.skip("window larger than the padded image")
    x = randn(np.random.default_rng(seed), g.x_shape)
    y, argmax = np.empty((g.B, g.C, Ho, Wo), F32), np.empty((g.B, g.C, Ho, Wo), np.int32)
    reference.max_pool_forward(x, y, argmax, g.kernel, g.stride, g.pads)
    expected = F.max_pool2d(F.pad(tensor(torch, x), g.torch_pad, value=-np.inf), g.kernel, g.stride)
    np.testing.assert_array_equal(y, expected.numpy())


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool_against_torch(torch, seed, count_include_pad):
    F = torch.nn.functional
    g = random_geometry(seed + 5000, dilation=False, torch_pool=True, overhang=False)
    rng = np.random.default_rng(seed)
    x = randn(rng, g.x_shape)
    y = np.empty(g.y_shape, F32)
    reference.avg_pool_forward(x, y, g.kernel, g.stride, g.pads, count_include_pad)
    xt = tensor(torch, x, grad=True)
    yt = F.avg_pool2d(xt, g.kernel, g.stride, g.pads[:2], ceil_mode=g.ceil_mode,
                      count_include_pad=count_include_pad)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dy = randn(rng, g.y_shape)
    yt.backward(tensor(torch, dy))
    dx = np.empty(g.x_shape, F32)
    reference.avg_pool_backward(dy, dx, g.kernel, g.stride, g.pads, count_include_pad)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)


@pytest.mark.parametrize("seed", range(20))
def test_lrn_against_torch(torch, seed):
    """torch's window is [c - n//2, c + (n-1)//2], Caffe/ONNX's is [c - (n-1)//2, c + n//2]: equal
    for odd n, mirrored for even n. So compare on channel-reversed input for even n."""
    F = torch.nn.functional
    rng, shape, p = random_lrn(seed)
    n = p["local_size"]
    flip = (lambda a: a[:, ::-1]) if n % 2 == 0 else (lambda a: a)
    x = randn(rng, shape)
    y, scale = np.empty(shape, F32), np.empty(shape, F32)
    reference.lrn_forward(x, y, scale, n, p["alpha"], p["beta"], p["k"])
    xt = tensor(torch, flip(x), grad=True)
    yt = F.local_response_norm(xt, n, p["alpha"], p["beta"], p["k"])
    np.testing.assert_allclose(y, flip(yt.detach().numpy()), **TOL)
    dy = randn(rng, shape)
    yt.backward(tensor(torch, flip(dy)))
    dx = np.empty(shape, F32)
    reference.lrn_backward(x, y, scale, dy, dx, n, p["alpha"], p["beta"])
    np.testing.assert_allclose(dx, flip(xt.grad.numpy()), **TOL)


@pytest.mark.parametrize("seed", range(20))
def test_depthwise_conv_against_torch(torch, seed):
    F = torch.nn.functional
    g = random_geometry(seed + 6000, overhang=False)
    g.ceil_mode = False
    g.out_hw = (out_size(g.H, g.kernel[0], g.stride[0], g.pads[0], g.pads[2], g.dilation[0]),
                out_size(g.W, g.kernel[1], g.stride[1], g.pads[1], g.pads[3], g.dilation[1]))
    if min(g.out_hw) < 1:
        pytest.skip("kernel larger than the padded image")
    rng = np.random.default_rng(seed)
    x, w = randn(rng, g.x_shape), randn(rng, (g.C, 1) + g.kernel)
    y = np.empty(g.y_shape, F32)
    reference.depthwise_conv_forward(x, w, y, g.stride, g.pads, g.dilation)
    xt, wt = tensor(torch, x, grad=True), tensor(torch, w, grad=True)
    yt = F.conv2d(F.pad(xt, g.torch_pad), wt, stride=g.stride, dilation=g.dilation, groups=g.C)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOL)
    dy = randn(rng, g.y_shape)
    yt.backward(tensor(torch, dy))
    dx, dw = np.empty(g.x_shape, F32), np.empty(w.shape, F32)
    reference.depthwise_conv_backward(x, w, dy, dx, dw, g.stride, g.pads, g.dilation)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(dw, wt.grad.numpy(), **TOL)


# ---- backend switch --------------------------------------------------------------------------

def test_set_backend_switches_the_dispatch():
    previous = kernels.get_backend()
    try:
        kernels.set_backend("numpy")
        assert kernels.get_backend() == "numpy"
        x = np.random.default_rng(0).standard_normal((1, 2, 4, 4))  # float64: reference only
        y, argmax = np.empty((1, 2, 2, 2)), np.empty((1, 2, 2, 2), np.int32)
        kernels.max_pool_forward(x, y, argmax, (2, 2), (2, 2), (0, 0, 0, 0))
        np.testing.assert_array_equal(y, x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
        if _compiled is not None:
            with kernels.using_backend("compiled"):
                assert kernels.get_backend() == "compiled"
                # the compiled kernels are float32 only: float64 goes to the reference
                y[...] = 0
                kernels.max_pool_forward(x, y, argmax, (2, 2), (2, 2), (0, 0, 0, 0))
                np.testing.assert_array_equal(y, x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
                with pytest.raises(ValueError):  # _compiled itself refuses float64
                    _compiled.max_pool_forward(x, y, argmax, (2, 2), (2, 2), (0, 0, 0, 0))
            assert kernels.get_backend() == "numpy"
        with pytest.raises(ValueError, match="unknown kernel backend"):
            kernels.set_backend("cuda")
    finally:
        kernels.set_backend(previous)


def run_python(code, **env):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, **env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_environment_variables_set_the_defaults():
    code = "import decaf.kernels as k, decaf.threads as t; print(k.get_backend(), t.get_num_threads()[0])"
    out = run_python(code, DECAF_BACKEND="numpy", DECAF_NUM_THREADS="3").stdout.split()
    assert out[0] == "numpy"
    if _compiled is not None:
        assert out[1] == "3"
        assert run_python(code, DECAF_BACKEND="").stdout.split()[0] == "compiled"


def test_missing_extension_falls_back_to_numpy_with_a_warning():
    # A None entry in sys.modules makes `from . import _compiled` raise ImportError.
    code = ("import sys, warnings; sys.modules['decaf.kernels._compiled'] = None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always'); import decaf.kernels as k\n"
            "print(k.get_backend()); print(w[0].message)")
    out = run_python(code, DECAF_BACKEND="compiled").stdout.splitlines()
    assert out[0] == "numpy"
    assert "compiled kernels unavailable (ModuleNotFoundError" in out[1]


@pytest.mark.parametrize("impl", [reference] + ([_compiled] if _compiled is not None else []),
                         ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("n", [0, 5, 100_003])
def test_copy_count_nonfinite(impl, n):
    rng = np.random.default_rng(n)
    src = randn(rng, (n,))
    bad = rng.choice(n, size=min(n, 7), replace=False) if n else []
    for i, value in zip(bad, [np.nan, np.inf, -np.inf] * 3):
        src[i] = value
    dst = np.full(n, 7.0, F32)
    assert impl.copy_count_nonfinite(src, dst) == len(bad)
    np.testing.assert_array_equal(dst, src)


@needs_compiled
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("H,W,k,pad,dil", [(27, 27, 5, 2, 1), (9, 40, 3, 1, 2), (20, 17, 3, 0, 1), (5, 33, 1, 0, 1)])
def test_im2col_wide_rows_match_reference(H, W, k, pad, dil, threads):
    # rows wider than 16 outputs take the plain-load / spill path of csrc/im2col.c
    rng = np.random.default_rng(H * W + k)
    x = randn(rng, (3, 4, H, W))
    Ho = (H + 2 * pad - dil * (k - 1) - 1) + 1
    Wo = (W + 2 * pad - dil * (k - 1) - 1) + 1
    params = ((k, k), (1, 1), (pad, pad, pad, pad), (dil, dil), (Ho, Wo))
    with using_threads(threads):
        (c,), (r,) = both("im2col", [x], [((4 * k * k, 3 * Ho * Wo), F32)], params)
    np.testing.assert_array_equal(c, r)


@needs_compiled
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("H,W,k,stride,pads", [(57, 57, 3, 1, (1, 1, 1, 1)), (56, 56, 3, 2, (0, 0, 1, 1)),
                                               (29, 40, 5, 2, (2, 2, 2, 2)), (14, 33, 5, 1, (2, 1, 2, 3)),
                                               (9, 150, 3, 1, (1, 0, 1, 2)), (20, 261, 5, 2, (0, 2, 1, 1)),
                                               (7, 7, 5, 1, (2, 2, 2, 2)), (3, 70, 3, 1, (0, 0, 0, 0))])
def test_depthwise_wide_rows_match_reference(H, W, k, stride, pads, threads):
    # rows wider than 16 outputs, strides 1 and 2 (EfficientNet's SAME pads): the vector kernel
    rng = np.random.default_rng(H + W + k)
    x, w = randn(rng, (2, 5, H, W)), randn(rng, (5, 1, k, k))
    Ho = (H + pads[0] + pads[2] - k) // stride + 1
    Wo = (W + pads[1] + pads[3] - k) // stride + 1
    params = ((stride, stride), pads, (1, 1))
    with using_threads(threads):
        (c,), (r,) = both("depthwise_conv_forward", [x, w], [((2, 5, Ho, Wo), F32)], params)
    assert_depthwise_equal(c, r, (k, k), (stride, stride), (1, 1))


@needs_compiled
@pytest.mark.parametrize("stride, kernel, pads", [(1, 3, (1, 1, 1, 1)), (2, 3, (1, 1, 1, 1)), (2, 2, (0, 0, 0, 0)),
                                                  (1, 2, (0, 1, 1, 0)), (2, 3, (0, 0, 0, 0))])
def test_max_pool_argmax_rows_wide_planes(isa, stride, kernel, pads):
    """The train-phase max pooling's vector rows (8 outputs per vector, stride 1 or 2) on rows wider
    than a vector, with ties, -inf and NaN: the same values and argmax as the reference's rule (first
    real pixel, then strictly greater), in every kernel variant this CPU runs (the isa fixture)."""
    rng = np.random.default_rng(stride * 10 + kernel)
    x = rng.integers(-2, 3, (2, 3, 13, 37)).astype(F32)
    x[0, 0, 2, 5] = np.nan
    x[0, 1, 0, :] = -np.inf
    x[1, 2, 4, 10:20] = np.nan
    x[1, 0, :, 0] = -np.inf
    H, W = x.shape[2:]
    Ho = (H + pads[0] + pads[2] - kernel) // stride + 1
    Wo = (W + pads[1] + pads[3] - kernel) // stride + 1
    params = ((kernel, kernel), (stride, stride), pads)
    (cy, ca), (ry, ra) = both("max_pool_forward", [x], [((2, 3, Ho, Wo), F32), ((2, 3, Ho, Wo), np.int32)], params)
    np.testing.assert_array_equal(ca, ra)
    np.testing.assert_array_equal(cy, ry)      # (NaN == NaN for assert_array_equal)
