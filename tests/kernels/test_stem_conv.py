"""The direct stem convolution (csrc/stem_conv.c: C <= 4 input channels, 3x3, 5x5 or 7x7, stride 1
or 2) run through decaf.kernels.conv_forward, against a float64 NumPy formula written out here (the
sum over the window's taps of the zero-padded input) and, for two cases, decaf's NumPy reference
backend.

Every case runs with the plan's kernel checked (conv_plan(...)["stem"]): in the AVX2 variant the
plan picks it by itself for stride 2; for the generic variant, and for stride 1, the environment
knob DECAF_STEM_CONV=on forces it (the plan reads it when made). Each instruction set variant this
CPU runs, 1 and 2 threads, every activation kind, with a residual and into a second output.

Tolerances: float32 sums in another order than float64's: rtol 1e-5, atol 1e-5 x the largest
|pre-activation| (the activations have slopes <= 1.1, so the same bound holds after them, plus
the polynomial exponential's few ulp).
"""
import numpy as np
import pytest

import decaf.blas  # noqa: F401  (loads the SGEMM the im2col + GEMM path calls)
from decaf import kernels
from decaf.kernels import reference
from decaf.threads import using_threads

from act_reference import act_f64

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

ACTS = [None, ("clamp", 0.0, float("inf"), 0.0), ("clamp", 0.0, 6.0, 0.0), ("clamp", -0.5, 0.75, 0.0),
        ("leaky", 0.0, 0.0, 0.1), ("hardswish", 0.0, 0.0, 0.0), ("silu", 0.0, 0.0, 1.0),
        ("sigmoid", 0.0, 0.0, 0.0), ("hardsigmoid", 0.5, 1.0, 1 / 6)]

# (B, C, H, W, K, stride, pads (top, left, bottom, right)[, window side: 3 if not given])
CASES = [
    (1, 3, 17, 19, 16, 2, (1, 1, 1, 1)),
    (2, 3, 17, 19, 24, 2, (1, 1, 1, 1)),
    (16, 3, 9, 9, 32, 2, (1, 1, 1, 1)),
    (3, 3, 18, 20, 13, 2, (0, 0, 1, 1)),     # odd K (a block of 1 channel), TensorFlow's "same" padding
    (2, 3, 15, 16, 13, 2, (0, 0, 0, 0)),     # no padding
    (1, 1, 33, 50, 7, 2, (1, 1, 1, 1)),      # one channel: rows of 25 outputs (a tile of 24 and a 1-pixel tail)
    (2, 4, 11, 7, 6, 2, (2, 2, 2, 2)),       # four channels, padding 2
    (1, 2, 12, 40, 9, 2, (1, 0, 0, 1)),      # asymmetric padding
    (2, 3, 13, 21, 16, 1, (1, 1, 1, 1)),     # stride 1
    (1, 3, 10, 9, 5, 1, (0, 0, 0, 0)),
    (2, 3, 29, 31, 16, 2, (3, 3, 3, 3), 7),  # ResNet's stem (7x7, stride 2, pad 3), small
    (1, 3, 40, 57, 13, 2, (3, 3, 2, 3), 7),  # odd K, asymmetric padding, a 1-pixel tail (29 outputs)
    (1, 1, 16, 18, 8, 1, (3, 3, 3, 3), 7),   # stride 1: tap offsets up to 6 past a tile
    (2, 4, 20, 19, 6, 2, (6, 6, 6, 6), 7),   # padding 6 (the most a 7x7 window allows)
    (1, 3, 23, 26, 12, 2, (2, 2, 2, 2), 5),  # 5x5
    (1, 2, 14, 12, 7, 1, (0, 0, 0, 0), 5),
]


def side(case):
    return case[7] if len(case) > 7 else 3


def conv_f64(x, w, bias, stride, pads):
    """The convolution in float64: y[b, k, oh, ow] = bias[k] + sum over c, i, j of
    w[k, c, i, j] xp[b, c, s oh + i, s ow + j], xp x zero-padded."""
    B, C, H, W = x.shape
    K, ks = w.shape[0], w.shape[2]
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    Ho, Wo = (H + top + bottom - ks) // stride + 1, (W + left + right - ks) // stride + 1
    y = np.zeros((B, K, Ho, Wo)) + bias.astype(np.float64).reshape(1, K, 1, 1)
    for i in range(ks):
        for j in range(ks):
            win = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            y += np.einsum("kc,bchw->bkhw", w[:, :, i, j].astype(np.float64), win)
    return y


def arrays(case, seed):
    B, C, H, W, K = case[:5]
    ks = side(case)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = (rng.standard_normal((K, C, ks, ks)) / np.sqrt(C * ks * ks) * 3).astype(F32)
    bias = rng.standard_normal(K).astype(F32)
    return x, w, bias


def params(case):
    s, pads, ks = case[5], case[6], side(case)
    return (ks, ks), (s, s), pads, (1, 1)


def out_shape(case):
    B, C, H, W, K, s, (t, l, b, r) = case[:7]
    ks = side(case)
    return B, K, (H + t + b - ks) // s + 1, (W + l + r - ks) // s + 1


def stem_plan(case, threads):
    x_shape, ks = case[:4], side(case)
    return _compiled.conv_plan(x_shape, (case[4], case[1], ks, ks), 1, *params(case), out_shape(case)[2:],
                               threads=threads)


def run(case, x, w, bias, act=None, residual=None, into=False, threads=1):
    """(y, the activation's output): conv_forward with the stem kernel, checked to be the plan's."""
    with using_threads(threads):
        assert stem_plan(case, threads)["stem"], "the plan did not pick the stem kernel"
        y = np.full(out_shape(case), np.nan, F32)
        out = np.full(y.shape, np.nan, F32) if into else None
        work = np.empty(max(_compiled.conv_work_size(x.shape, w.shape, 1, *params(case), y.shape[2:], False), 1), F32)
        kernels.conv_forward(x, w, bias, y, work, *params(case), 1, act=act, residual=residual, relu_out=out)
    return y, (out if into else y)


def close(actual, expected, scale):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.fixture(params=["on", "stream"])
def forced(monkeypatch, isa, request):
    """The stem kernel wherever it is supported (the generic variant and K > 64 too), its stores
    plain or streamed (the path of outputs larger than the last-level cache)."""
    monkeypatch.setenv("DECAF_STEM_CONV", request.param)
    return isa


@pytest.mark.parametrize("index", range(len(CASES)))
@pytest.mark.parametrize("threads", [1, 2])
def test_stem_matches_float64_formula(forced, index, threads):
    case = CASES[index]
    x, w, bias = arrays(case, index)
    want = conv_f64(x, w, bias, case[5], case[6])
    y, _ = run(case, x, w, bias, threads=threads)
    close(y, want, np.abs(want).max())
    y, _ = run(case, x, w, None, threads=threads)   # no bias
    close(y, want - bias.reshape(1, -1, 1, 1), np.abs(want).max())


@pytest.mark.parametrize("case", [(2, 3, 17, 19, 13, 2, (1, 1, 1, 1)), (1, 3, 21, 23, 13, 2, (3, 3, 3, 3), 7)],
                         ids=["3x3", "7x7"])
@pytest.mark.parametrize("act", ACTS, ids=lambda a: "none" if a is None else f"{a[0]}-{a[2]}")
def test_every_activation_with_and_without_residual(forced, act, case):
    x, w, bias = arrays(case, 7)
    pre = conv_f64(x, w, bias, 2, case[6])
    scale = np.abs(pre).max()
    residual = np.random.default_rng(3).standard_normal(pre.shape).astype(F32)
    for threads in (1, 2):
        y, a = run(case, x, w, bias, act=act, threads=threads)                  # in y
        close(a, act_f64(pre, act), scale)
        if act is not None:
            y, a = run(case, x, w, bias, act=act, into=True, threads=threads)   # into out, y keeps v
            close(y, pre, scale)
            close(a, act_f64(pre, act), scale)
        v = pre + residual
        y, a = run(case, x, w, bias, act=act, residual=residual, threads=threads)
        close(a, act_f64(v, act), np.abs(v).max())


@pytest.mark.parametrize("act", [None, ("clamp", 0.0, 6.0, 0.0), ("silu", 0.0, 0.0, 1.0)],
                         ids=["none", "relu6", "silu"])
def test_nan_propagates(forced, act):
    case = (1, 3, 17, 19, 16, 2, (1, 1, 1, 1))
    x, w, bias = arrays(case, 11)
    x[0, 1, 5, 9] = np.nan            # padded (6, 10): read by output rows 2, 3 and columns 4, 5
    want = act_f64(conv_f64(x, w, bias, 2, case[6]), act)
    assert np.isnan(want).sum() == 16 * 4
    for threads in (1, 2):
        _, a = run(case, x, w, bias, act=act, threads=threads)
        assert np.array_equal(np.isnan(a), np.isnan(want))
        finite = ~np.isnan(want)
        close(a[finite], want[finite], np.abs(want[finite]).max())


@pytest.mark.parametrize("case, act", [((1, 3, 224, 224, 32, 2, (1, 1, 1, 1)), ("clamp", 0.0, 6.0, 0.0)),
                                       ((1, 3, 224, 224, 64, 2, (3, 3, 3, 3), 7), ("clamp", 0.0, np.inf, 0.0))],
                         ids=["mobilenet_v2", "resnet"])
def test_full_size_stem_against_numpy_backend(forced, case, act):
    """MobileNetV2's stem (3x3, ReLU6) and ResNet's (7x7, ReLU) at 224x224, batch 1, the activation
    into a second output, against decaf's NumPy reference backend (im2col + a NumPy product)."""
    x, w, bias = arrays(case, 5)
    want_y, want_a = np.empty(out_shape(case), F32), np.empty(out_shape(case), F32)
    reference.conv_forward(x, w, bias, want_y, None, *params(case), 1, act=act, relu_out=want_a)
    scale = np.abs(want_y).max()
    for threads in (1, 2):
        y, a = run(case, x, w, bias, act=act, into=True, threads=threads)
        close(y, want_y, scale)
        close(a, want_a, scale)


def test_plan_picks_the_stem_kernel_where_measured_faster(isa, monkeypatch):
    """Without the knob: the AVX2 variant's plan picks the kernel for the stems (and other
    few-channel 3x3 and 7x7 convolutions with K <= 64), never for a backward, nor for what it does
    not support; the knob "off" turns it off."""
    monkeypatch.delenv("DECAF_STEM_CONV", raising=False)
    for B in (1, 16):
        for K in (16, 24, 32):
            case = (B, 3, 224, 224, K, 2, (1, 1, 1, 1))
            for threads in (1, 2):
                assert stem_plan(case, threads)["stem"] == (isa != "generic"), (case, threads)
    for case in [(16, 3, 32, 32, 16, 1, (1, 1, 1, 1)), (1, 1, 9, 9, 64, 2, (0, 0, 0, 0)),
                 (1, 3, 224, 224, 64, 2, (3, 3, 3, 3), 7), (16, 3, 224, 224, 64, 2, (3, 3, 3, 3), 7)]:   # ResNet's
        assert stem_plan(case, 2)["stem"] == (isa != "generic"), case
    assert not stem_plan((1, 3, 32, 32, 16, 2, (2, 2, 2, 2), 5), 2)["stem"]   # 5x5: supported, not measured
    unsupported = [(1, 5, 32, 32, 16, 2, (1, 1, 1, 1)),     # 5 input channels
                   (1, 3, 32, 32, 16, 3, (1, 1, 1, 1)),     # stride 3
                   (1, 3, 32, 32, 16, 2, (3, 3, 3, 3), 9),  # 9x9
                   (1, 3, 32, 32, 16, 2, (2, 2, 2, 2), 4)]  # an even window
    for case in unsupported + [(1, 3, 32, 32, 65, 2, (1, 1, 1, 1))]:   # (K > 64: not measured, GEMM)
        assert not stem_plan(case, 2)["stem"], case
    case = (1, 3, 224, 224, 32, 2, (1, 1, 1, 1))
    assert not _compiled.conv_plan(case[:4], (32, 3, 3, 3), 1, *params(case), (112, 112), backward=True,
                                   threads=2)["stem"]
    monkeypatch.setenv("DECAF_STEM_CONV", "off")
    assert not stem_plan(case, 2)["stem"]
    monkeypatch.setenv("DECAF_STEM_CONV", "on")
    assert not stem_plan(unsupported[0], 2)["stem"]     # (on: only where supported)


def test_output_smaller_than_the_input_covers(forced):
    """y with fewer rows and columns than the input would give (the last ones dropped): the first
    ones of the full convolution, the split rows keeping only the columns they can hold."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((1, 3, 12, 100)).astype(F32)
    w = rng.standard_normal((6, 3, 3, 3)).astype(F32)
    bias = rng.standard_normal(6).astype(F32)
    want = conv_f64(x, w, bias, 2, (0, 0, 0, 0))[:, :, :5, :4]
    geom = ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1))
    assert _compiled.conv_plan(x.shape, w.shape, 1, *geom, (5, 4))["stem"]
    y = np.full((1, 6, 5, 4), np.nan, F32)
    work = np.empty(_compiled.conv_work_size(x.shape, w.shape, 1, *geom, (5, 4), False), F32)
    kernels.conv_forward(x, w, bias, y, work, *geom, 1)
    close(y, want, np.abs(want).max())
