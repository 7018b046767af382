"""The depthwise forward's channel means (csrc/depthwise.c, means=): each output plane's mean after
the epilogue, computed as the plane is finished, for the squeeze-excitation block's global average
pooling that reads it (decaf/optimize.py fuses the two).

They must be the very floats the pooling kernel gives on the finished output (both sum a plane
with decaf_plane_mean, csrc/plane_mean.h), in every kernel variant, on the fast path (3x3 and 5x5
at stride 1 and 2, 7x7 at stride 1) and the others (dilation: the means in a pass of their own);
and within float32 rounding of the float64 mean. The output itself is unchanged by asking for them.
"""
import numpy as np
import pytest

from decaf.kernels import reference
from decaf.threads import using_threads

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

# (B, C, H, W, k, stride, dilation)
SHAPES = [(1, 16, 56, 56, 3, 1, 1), (2, 24, 28, 28, 3, 2, 1), (1, 40, 14, 14, 5, 1, 1), (2, 8, 29, 31, 5, 2, 1),
          (1, 32, 7, 7, 3, 1, 1), (1, 12, 21, 19, 7, 1, 1), (1, 8, 5, 3, 3, 1, 1), (2, 8, 17, 17, 3, 1, 2)]
ACTS = [(None, False, False), (("clamp", 0.0, 6.0, 0.0), False, False), (("silu", 0.0, 0.0, 1.0), False, False),
        (("hardswish", 0.0, 0.0, 0.0), True, False), (("clamp", 0.0, np.inf, 0.0), False, True)]


def run(shape, act, into, residual, seed=0):
    B, C, H, W, k, s, d = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = (rng.standard_normal((C, 1, k, k)) / k).astype(F32)
    bias = rng.standard_normal(C).astype(F32)
    p = d * (k - 1) // 2
    Ho, Wo = (H + 2 * p - d * (k - 1) - 1) // s + 1, (W + 2 * p - d * (k - 1) - 1) // s + 1
    res = rng.standard_normal((B, C, Ho, Wo)).astype(F32) if residual else None
    args = ((s, s), (p, p, p, p), (d, d), bias)

    def forward(means):
        y = np.full((B, C, Ho, Wo), np.nan, F32)
        out = np.full_like(y, np.nan) if into else None
        _compiled.DepthwiseForward(x, w, y, *args, 0.0, act, res, out, means).run()
        return y, out
    return forward


@pytest.mark.parametrize("act, into, residual", ACTS, ids=["none", "relu6", "silu", "hardswish-into", "relu+res"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[4]}x{s[4]}s{s[5]}d{s[6]}@{s[2]}x{s[3]}")
def test_means_are_the_pooling_of_the_output(isa, shape, act, into, residual):
    forward = run(shape, act, into, residual)
    for threads in (1, 2):
        with using_threads(threads):
            y0, out0 = forward(None)
            means = np.full(shape[:2] + (1, 1), np.nan, F32)
            y, out = forward(means)
            np.testing.assert_array_equal(y, y0)                   # the output is the same
            if into:
                np.testing.assert_array_equal(out, out0)
            final = out if into else y
            pooled = np.full_like(means, np.nan)
            _compiled.avg_pool_forward(final, pooled, final.shape[2:], (1, 1), (0, 0, 0, 0), True)
            np.testing.assert_array_equal(means, pooled)
            np.testing.assert_allclose(means, final.astype(np.float64).mean(axis=(2, 3), keepdims=True),
                                       rtol=1e-5, atol=1e-6)


def test_reference_backend_means_and_bad_shapes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((3, 1, 3, 3))
    y, out, means = np.empty((2, 3, 6, 6)), np.empty((2, 3, 6, 6)), np.empty((2, 3, 1, 1))
    act = ("hardswish", 0.0, 0.0, 0.0)
    reference.depthwise_conv_forward(x, w, y, (1, 1), (1, 1, 1, 1), (1, 1), None, 0.0, act, None, out, means)
    np.testing.assert_allclose(means, out.mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    assert not np.allclose(means, y.mean(axis=(2, 3), keepdims=True))    # (of the activation's output)
    with pytest.raises(ValueError, match="means"):
        reference.depthwise_conv_forward(x, w, y, (1, 1), (1, 1, 1, 1), (1, 1), means=np.empty((2, 3, 1, 2)))
    x32, w32, y32 = x.astype(F32), w.astype(F32), y.astype(F32)
    with pytest.raises(ValueError, match="means"):
        _compiled.DepthwiseForward(x32, w32, y32, (1, 1), (1, 1, 1, 1), (1, 1), means=np.empty((2, 4, 1, 1), F32))
