"""The convolutions' epilogue (csrc/activation.h): every activation, with and without a residual add,
in place or into its own output, in every kernel path (direct, im2col + GEMM, pointwise GEMM,
one product for the batch on 1x1 planes, depthwise) and every instruction set variant this CPU runs, equals NumPy: the reference
convolution (decaf.kernels.reference, no epilogue), then the residual and the activation written
out here from their definitions (float64, rounded to float32).

Tolerances: the convolution's own sums differ in order from NumPy's (rtol = atol = 1e-5 of the
largest value, as test_isa.py); the activations are then applied to the kernel's own
pre-activation output, which the test reads back (relu_out mode), with rtol 2e-6 / atol 2e-7:
the clamps and the leaky slope are exact; HardSigmoid rounds alpha v (or fuses it into one
multiply-add); HardSwish rounds v + 3 in float32 (near v = -3 an
absolute error up to ulp(3) |v| / 12, about 1.2e-7); SiLU and sigmoid use a polynomial
exponential within 2 ulp (measured 1.7 ulp over [-87, 88]) plus an add and a division; GELU
uses an erfc fit within 1.2e-7 relative (Phi within about 1e-7 absolute), well inside 2e-6 / 2e-7.
"""
import numpy as np
import pytest

import decaf.blas  # noqa: F401  (loads the SGEMM the GEMM path calls)
from decaf.kernels import reference

from act_reference import act_f64

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

ACTS = [("clamp", 0.0, float("inf"), 0.0), ("clamp", 0.0, 6.0, 0.0), ("clamp", -0.5, 0.75, 0.0),
        ("leaky", 0.0, 0.0, 0.1), ("hardswish", 0.0, 0.0, 0.0), ("silu", 0.0, 0.0, 1.0),
        ("silu", 0.0, 0.0, 1.702), ("sigmoid", 0.0, 0.0, 0.0), ("hardsigmoid", 0.5, 1.0, 0.2),
        ("hardsigmoid", 0.5, 1.0, 1 / 6), ("gelu", 0.0, 0.0, 0.0)]


# (B, C, H, W, K, group, kernel, stride, pad, path) with the path the plan takes on AVX2
CASES = [
    (2, 32, 9, 11, 32, 1, 3, 1, 1, "direct"),      # blocked direct kernel (AVX2); GEMM in generic
    (1, 3, 17, 17, 16, 1, 5, 2, 2, "direct"),      # plain direct kernel, one image split over threads
    (3, 6, 8, 7, 10, 2, 3, 1, 1, "gemm"),          # im2col + GEMM, grouped, by image
    (1, 8, 40, 40, 12, 1, 3, 1, 1, "gemm"),        # one wide image: bands of rows
    (2, 16, 6, 5, 24, 1, 1, 1, 0, "pointwise"),    # 1x1: the GEMM reads x directly
    (1, 300, 1, 1, 40, 1, 1, 1, 0, "matrix"),      # 1x1 planes: y (B, K) = x (B, C) w^T, one vector
    (3, 300, 1, 1, 40, 1, 1, 1, 0, "matrix"),      # ... a few rows (the skinny product)
    (5, 24, 1, 1, 36, 1, 1, 1, 0, "matrix"),       # ... short rows (the BLAS)
    (2, 12, 10, 9, 12, 12, 3, 1, 1, "depthwise"),
    (1, 8, 19, 23, 8, 8, 5, 2, 2, "depthwise"),    # stride 2, 5x5
]


def conv_case(case, seed):
    B, C, H, W, K, group, k, s, pad, path = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = (rng.standard_normal((K, C // group, k, k)) / np.sqrt(C // group * k * k) * 3).astype(F32)
    bias = rng.standard_normal(K).astype(F32)
    Ho, Wo = (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1
    params = ((k, k), (s, s), (pad,) * 4, (1, 1))
    y = np.empty((B, K, Ho, Wo), F32)
    reference.conv_forward(x, w, bias, y, None, *params, group)        # the plain convolution
    residual = rng.standard_normal(y.shape).astype(F32)
    return x, w, bias, params, y, residual


def run(path, x, w, bias, params, group, shape, act, residual, into):
    """The compiled kernel: (y, activation output)."""
    y = np.full(shape, np.nan, F32)
    out = np.full(shape, np.nan, F32) if into else None
    if path == "depthwise":
        _compiled.depthwise_conv_forward(x, w, y, params[1], params[2], params[3], bias, act=act,
                                         residual=residual, relu_out=out)
    else:
        work = np.empty(max(_compiled.conv_work_size(x.shape, w.shape, group, *params, shape[2:], False), 1), F32)
        _compiled.conv_forward(x, w, bias, y, work, *params, group, act=act, relu_out=out, residual=residual)
    return y, (out if into else y)


def close(actual, expected):
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[-1]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_every_epilogue_equals_numpy(isa, case, with_residual):
    group = case[5]
    x, w, bias, params, conv, residual = conv_case(case, seed=len(case[-1]) + case[0])
    if not with_residual:
        residual = None
    pre = conv if residual is None else conv + residual
    plan = _compiled.conv_plan(x.shape, w.shape, group, *params, conv.shape[2:])
    if case[-1] == "direct":
        assert plan["direct"] == (isa != "generic")          # the case covers the path it names
    if case[-1] in ("pointwise", "matrix"):
        assert plan["cols"] == 0 and not plan["direct"]      # 1x1: a GEMM straight on x, no im2col
    for act in ACTS:
        y, a = run(case[-1], x, w, bias, params, group, conv.shape, act, residual, into=True)
        close(y, pre)                                          # y keeps the value before the activation
        np.testing.assert_allclose(a, act_f64(y, act).astype(F32), rtol=2e-6, atol=2e-7,
                                   err_msg=f"{act} on {isa}")
        y2, a2 = run(case[-1], x, w, bias, params, group, conv.shape, act, residual, into=False)
        np.testing.assert_array_equal(a2, a)                   # in place: the same values


def test_activation_values_at_the_edges(isa):
    """Large, tiny, zero and NaN pre-activations through a 1x1 identity convolution (so the kernel
    sees exactly the values given): NaN stays NaN, nothing overflows, the tails are right."""
    v = np.array([-1e30, -200, -88, -20, -3, -1.5, -1e-6, 0, 1e-6, 2.5, 3, 20, 89, 1e30, np.nan], F32)
    v = np.tile(v, 3)   # 45 values: each through the vector loops (16 and 8 at a time), some through the scalar tail
    x = v.reshape(1, 1, 1, -1)
    w = np.ones((1, 1, 1, 1), F32)
    for act in ACTS:
        y = np.empty_like(x)
        out = np.empty_like(x)
        _compiled.conv_forward(x, w, None, y, np.empty(64, F32), (1, 1), (1, 1), (0,) * 4, (1, 1), 1,
                               act=act, relu_out=out)
        np.testing.assert_array_equal(y, x)
        expected = act_f64(v, act).astype(F32)
        np.testing.assert_allclose(out.ravel(), expected, rtol=2e-6, atol=1e-30, err_msg=str(act))
    y = np.empty_like(x)
    _compiled.depthwise_conv_forward(x, w, y, (1, 1), (0,) * 4, (1, 1), act=("silu", 0, 0, 1.0))
    np.testing.assert_allclose(y.ravel(), act_f64(v, ("silu", 0, 0, 1.0)).astype(F32), rtol=2e-6, atol=1e-30)


def test_reference_backend_agrees():
    """decaf.kernels.reference's epilogue (the NumPy backend) against the same definitions."""
    x, w, bias, params, conv, residual = conv_case(CASES[2], seed=5)
    for act in ACTS:
        y, out = np.empty_like(conv), np.empty_like(conv)
        reference.conv_forward(x, w, bias, y, None, *params, 2, act=act, relu_out=out, residual=residual)
        np.testing.assert_allclose(y, conv + residual, rtol=1e-6, atol=1e-6)
        # (the NumPy backend's sigmoid goes through tanh: near -1 it keeps absolute, not relative, precision)
        np.testing.assert_allclose(out, act_f64(y, act), rtol=2e-6, atol=1e-6)


def test_bad_epilogue_arguments_are_refused():
    x, w, bias, params, conv, residual = conv_case(CASES[2], seed=1)
    work = np.empty(_compiled.conv_work_size(x.shape, w.shape, 2, *params, conv.shape[2:], False), F32)
    y = np.empty_like(conv)
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        _compiled.conv_forward(x, w, bias, y, work, *params, 2, act=("mish", 0, 0, 0))
    with pytest.raises(ValueError, match="residual must not be y"):
        _compiled.conv_forward(x, w, bias, y, work, *params, 2, residual=y)
    with pytest.raises(ValueError, match="residual"):
        _compiled.conv_forward(x, w, bias, y, work, *params, 2, residual=np.ascontiguousarray(residual[:, :3]))
    with pytest.raises(ValueError, match="relu and act"):
        _compiled.conv_forward(x, w, bias, y, work, *params, 2, relu=True, act=ACTS[0])
    with pytest.raises(ValueError, match="relu_out without relu"):
        _compiled.conv_forward(x, w, bias, y, work, *params, 2, relu_out=np.empty_like(y))
