"""The depthwise forward on mobile nets' shapes (csrc/depthwise.c; on AVX2 its fast path: 3x3 and
5x5 windows at stride 1 and 2, no dilation), in every kernel variant this CPU runs, against an
independent float64 NumPy reference written here (zero-padded input, a sum over the taps, then the
epilogue's formulas).

Tolerance: |y - reference| <= 1e-5 * max(max |reference|, 1) (float32 sums of at most 25
products, and the epilogue's polynomial exponential). Where both sides do the same float32
operations in the same order (no activation or a clamp, against decaf.kernels.reference), the
results must be identical: the kernel sums each output's taps in (i, j) order, multiply then add.
That holds for every shape but those the AVX2 path runs in strips, which sum each window row with
FMAs (csrc/depthwise.c: 3x3 at stride 1 and 2, 5x5 and 7x7 at stride 1 on rows wider than 8):
there only the float64 check applies.
Shapes around the tiles: widths below, at and above multiples of 8 and 16, planes 1x1 to 8x8,
asymmetric and zero padding, row counts that are not multiples of the 4- or 8-row tiles, shapes
outside the fast path (dilation, non-square windows, unequal strides, 7x7) for the fallbacks.
"""
import numpy as np
import pytest

from decaf.kernels import reference

from act_reference import act_f64
from depthwise_order import sums_like_reference

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32


def reference64(x, w, bias, stride, pads, dilation, out_hw):
    """y[b, c, oh, ow] = sum_ij w[c, 0, i, j] x[b, c, oh sh - top + i dh, ow sw - left + j dw] + bias[c],
    in float64, x zero outside the image."""
    (sh, sw), (top, left), (dh, dw), (Ho, Wo) = stride, pads[:2], dilation, out_hw
    B, C, H, W = x.shape
    kh, kw = w.shape[2:]
    # enough zero padding on every side for any window
    extra_h, extra_w = (Ho - 1) * sh + (kh - 1) * dh + 1, (Wo - 1) * sw + (kw - 1) * dw + 1
    xp = np.zeros((B, C, top + H + extra_h, left + W + extra_w))
    xp[:, :, top:top + H, left:left + W] = x
    y = np.zeros((B, C, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh:i * dh + (Ho - 1) * sh + 1:sh, j * dw:j * dw + (Wo - 1) * sw + 1:sw]
            y += w[:, 0, i, j].astype(np.float64)[None, :, None, None] * patch
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y


ACTS = {  # name -> the kernel's act tuple (kind, lo, hi, alpha)
    "none": None,
    "relu": ("clamp", 0.0, np.inf, 0.0),
    "relu6": ("clamp", 0.0, 6.0, 0.0),
    "clip": ("clamp", -1.0, 1.5, 0.0),
    "leaky": ("leaky", 0.0, 0.0, 0.1),
    "hardswish": ("hardswish", 0.0, 0.0, 0.0),
    "silu": ("silu", 0.0, 0.0, 1.0),
    "sigmoid": ("sigmoid", 0.0, 0.0, 0.0),
    "hardsigmoid": ("hardsigmoid", 0.5, 1.0, 1.0 / 6),
}


def apply(act, v):
    """ACTS[act] applied to v in float64."""
    return act_f64(v, ACTS[act])


def out_size(H, W, k, stride, pads, dilation=(1, 1)):
    top, left, bottom, right = pads
    return ((H + top + bottom - (k[0] - 1) * dilation[0] - 1) // stride[0] + 1,
            (W + left + right - (k[1] - 1) * dilation[1] - 1) // stride[1] + 1)


def assert_close(y, ref):
    scale = max(float(np.abs(ref).max()), 1.0) if ref.size else 1.0
    err = float(np.abs(y.astype(np.float64) - ref).max()) if ref.size else 0.0
    assert err <= 1e-5 * scale, f"largest difference {err:.3g}, largest |y| {scale:.3g}"


def run(x, w, bias, stride, pads, dilation=(1, 1), act=None, residual=None, relu_out=None):
    Ho, Wo = out_size(x.shape[2], x.shape[3], w.shape[2:], stride, pads, dilation)
    y = np.full((x.shape[0], x.shape[1], Ho, Wo), np.nan, F32)
    _compiled.depthwise_conv_forward(x, w, y, stride, pads, dilation, bias, act=act, residual=residual,
                                     relu_out=relu_out)
    return y


def data(seed, B, C, H, W, kh, kw=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = rng.standard_normal((C, 1, kh, kw or kh)).astype(F32)
    bias = rng.standard_normal(C).astype(F32)
    return x, w, bias


# (H, W): planes 1x1 .. 8x8 and widths around 8 and 16 lanes, row counts around the 4 / 8-row tiles;
# then four wide enough for stride 2's 2-row x 4-vector tiles (4 output vectors and up), with 1, 2,
# 3 and 0 vectors left over and odd row counts; the last one computed in several bands of rows
# (about 16 kB of padded rows each), its rows' last vectors partial
PLANES = [(1, 1), (2, 3), (3, 2), (4, 4), (5, 7), (7, 7), (8, 8), (6, 9), (9, 15), (13, 16), (14, 14),
          (16, 17), (11, 24), (17, 31), (10, 33), (28, 28), (9, 66), (7, 90), (5, 111), (12, 64), (100, 101)]


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("s", [1, 2])
def test_planes_match_float64_and_reference(isa, k, s):
    # pads k//2 (the nets'), 0, and asymmetric (TensorFlow's "same" at stride 2: less before than after)
    for n, (H, W) in enumerate(PLANES):
        x, w, bias = data(n, 2, 3, H, W, k)
        for pads in [(k // 2,) * 4, (0, 0, 0, 0), (0, 1, 2, 1), (k // 2 - 1, k // 2, k // 2 + 1, k // 2 - 1)]:
            Ho, Wo = out_size(H, W, (k, k), (s, s), pads)
            if Ho <= 0 or Wo <= 0:
                continue
            for act in ("none", "relu6"):
                y = run(x, w, bias, (s, s), pads, act=ACTS[act])
                ref = reference64(x, w, bias, (s, s), pads, (1, 1), (Ho, Wo))
                assert_close(y, apply(act, ref))
                if sums_like_reference(isa, (k, k), (s, s)):
                    ry = np.empty_like(y)
                    reference.depthwise_conv_forward(x, w, ry, (s, s), pads, (1, 1), bias, act=ACTS[act])
                    np.testing.assert_array_equal(y, ry, err_msg=f"{H}x{W} k{k} s{s} pads {pads} {act}")


@pytest.mark.parametrize("act", sorted(ACTS))
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_every_activation(isa, act, k, s):
    x, w, bias = data(7, 2, 5, 14, 19, k)
    x *= 3   # values across the clamps and the sigmoid's tails
    pads = (k // 2,) * 4
    y = run(x, w, bias, (s, s), pads, act=ACTS[act])
    assert_close(y, apply(act, reference64(x, w, bias, (s, s), pads, (1, 1), y.shape[2:])))


@pytest.mark.parametrize("k,s", [(3, 1), (5, 2)])
def test_no_bias_residual_and_separate_output(isa, k, s):
    x, w, _ = data(3, 2, 4, 15, 12, k)
    pads = (k // 2,) * 4
    Ho, Wo = out_size(15, 12, (k, k), (s, s), pads)
    ref = reference64(x, w, None, (s, s), pads, (1, 1), (Ho, Wo))
    assert_close(run(x, w, None, (s, s), pads), ref)
    residual = np.random.default_rng(1).standard_normal(ref.shape).astype(F32)
    for act in ("none", "relu6", "hardswish"):
        y = run(x, w, None, (s, s), pads, act=ACTS[act], residual=residual)
        assert_close(y, apply(act, ref + residual))
    # the activation into its own array, y keeping conv + residual
    out = np.full(ref.shape, np.nan, F32)
    y = run(x, w, None, (s, s), pads, act=ACTS["relu6"], residual=residual, relu_out=out)
    assert_close(y, ref + residual)
    assert_close(out, apply("relu6", ref + residual))
    out[:] = np.nan
    y = run(x, w, None, (s, s), pads, act=ACTS["silu"], relu_out=out)
    assert_close(y, ref)
    assert_close(out, apply("silu", ref))


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (7, 1)])
def test_nothing_written_past_the_output(isa, k, s):
    # narrow planes (a row shorter than a vector: the kernel stores whole vectors whose extra lanes
    # land in the next rows, but must not pass the plane's end): y is the front of a larger array
    # whose tail must stay as it was
    for H, W in [(12, 1), (9, 3), (10, 7), (5, 2), (3, 9), (2, 13), (6, 21)]:
        x, w, bias = data(H * W, 1, 3, H, W, k)
        pads = (k // 2,) * 4
        Ho, Wo = out_size(H, W, (k, k), (s, s), pads)
        n = 3 * Ho * Wo
        big = np.full(n + 64, -7.0, F32)
        y = big[:n].reshape(1, 3, Ho, Wo)
        _compiled.depthwise_conv_forward(x, w, y, (s, s), pads, (1, 1), bias, act=ACTS["relu6"])
        assert (big[n:] == -7.0).all(), f"{H}x{W} k{k} s{s}: written past the output"
        assert_close(y, apply("relu6", reference64(x, w, bias, (s, s), pads, (1, 1), (Ho, Wo))))


def test_nan_passes_through_the_clamp(isa):
    x, w, bias = data(4, 1, 2, 9, 9, 3)
    x[0, 1, 4, 4] = np.nan
    y = run(x, w, bias, (1, 1), (1, 1, 1, 1), act=ACTS["relu6"])
    assert np.isnan(y[0, 1, 3:6, 3:6]).all()
    assert np.isfinite(y[0, 0]).all() and np.isfinite(y[0, 1][np.r_[0:3, 6:9]]).all()
    assert (y[np.isfinite(y)] >= 0).all() and (y[np.isfinite(y)] <= 6).all()


@pytest.mark.parametrize("case", [
    ("dilation 2", (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),
    ("3x5", (3, 5), (1, 1), (1, 2, 1, 2), (1, 1)),
    ("strides 1, 2", (3, 3), (1, 2), (1, 1, 1, 1), (1, 1)),
    ("7x7", (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
    ("stride 3", (3, 3), (3, 3), (1, 1, 1, 1), (1, 1)),
], ids=lambda c: c[0])
def test_shapes_outside_the_fast_path(isa, case):
    _, (kh, kw), stride, pads, dilation = case
    x, w, bias = data(5, 2, 3, 17, 23, kh, kw)
    y = run(x, w, bias, stride, pads, dilation, act=ACTS["hardswish"])
    ref = reference64(x, w, bias, stride, pads, dilation, y.shape[2:])
    assert_close(y, apply("hardswish", ref))


def test_many_planes_over_threads(isa):
    # a MobileNet-like layer, big enough to be split over threads, every plane checked
    x, w, bias = data(6, 3, 40, 14, 14, 3)
    for s in (1, 2):
        y = run(x, w, bias, (s, s), (1, 1, 1, 1), act=ACTS["relu6"])
        ref = reference64(x, w, bias, (s, s), (1, 1, 1, 1), (1, 1), y.shape[2:])
        assert_close(y, apply("relu6", ref))


@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_large_input_with_prefetch(isa, k, s):
    # an input of 8 MB or more with planes of 512 pixels and up: the fast path prefetches the next
    # plane while computing one (2 x 38 planes of 120 x 120, 8.8 MB), over the threads
    x, w, bias = data(8, 2, 38, 120, 120, k)
    pads = (k // 2,) * 4
    y = run(x, w, bias, (s, s), pads, act=ACTS["relu6"])
    ref = reference64(x, w, bias, (s, s), pads, (1, 1), y.shape[2:])
    assert_close(y, apply("relu6", ref))
    if sums_like_reference(isa, (k, k), (s, s)):
        ry = np.empty_like(y)
        reference.depthwise_conv_forward(x, w, ry, (s, s), pads, (1, 1), bias, act=ACTS["relu6"])
        np.testing.assert_array_equal(y, ry)
