"""The few-input-channels convolution (csrc/stem_conv.c: a network's first layer, output pixels in
the vector lanes) through kernels.conv_forward, against a float64 NumPy reference written here:
the padded input and the taps summed as strided channel contractions. Tolerance 1e-5 of the
largest |output| (float32 sums of at most 63 products)."""
import numpy as np
import pytest

import decaf
import decaf.kernels as kernels

_compiled = kernels._compiled
pytestmark = pytest.mark.skipif(_compiled is None, reason="compiled kernels not available")


def reference(x, w, bias, stride, pads):
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    K, C, kh, kw = w.shape
    Ho = (xp.shape[2] - kh) // stride + 1
    Wo = (xp.shape[3] - kw) // stride + 1
    y = np.zeros((x.shape[0], K, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (Ho - 1) + 1:stride, j:j + stride * (Wo - 1) + 1:stride]
            y += np.einsum("bchw,kc->bkhw", patch, w[:, :, i, j].astype(np.float64))
    return y + (0 if bias is None else bias.astype(np.float64)[None, :, None, None])


def run(x, w, bias, stride, pads, **kw):
    B, C, H, W = x.shape
    K, _, kh, kwd = w.shape
    Ho = (H + pads[0] + pads[2] - kh) // stride + 1
    Wo = (W + pads[1] + pads[3] - kwd) // stride + 1
    geo = (1, (kh, kwd), (stride, stride), pads, (1, 1), (Ho, Wo))
    assert _compiled.conv_plan(x.shape, w.shape, *geo)["stem"]            # the kernel under test runs
    y = np.full((B, K, Ho, Wo), np.nan, np.float32)
    work = np.full(kernels.conv_work_size(x, w, *geo), np.nan, np.float32)   # garbage scratch
    kernels.conv_forward(x, w, bias, y, work, (kh, kwd), (stride, stride), pads, (1, 1), 1, **kw)
    return y


# (B, C, H, W, K, kernel, stride, pads): MobileNet's stem, odd sizes, K not a multiple of 4, rows
# narrower and wider than a 16-pixel tile, asymmetric pads, 1 and 2 channels, 5x5 and 7x1-ish
CASES = [
    (1, 3, 224, 224, 32, 3, 2, (1, 1, 1, 1)),
    (2, 3, 33, 35, 30, 3, 2, (0, 1, 1, 0)),
    (1, 3, 17, 5, 7, 3, 1, (1, 1, 1, 1)),
    (3, 1, 20, 40, 5, 5, 2, (2, 2, 2, 2)),
    (1, 2, 9, 9, 16, 5, 1, (0, 0, 0, 0)),
    (2, 4, 12, 31, 9, 3, 1, (2, 0, 0, 2)),
    (1, 3, 4, 4, 3, 3, 2, (1, 1, 1, 1)),
    (1, 1, 30, 30, 6, 7, 2, (3, 3, 3, 3)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}s{c[6]}")
def test_matches_reference(case, threads):
    B, C, H, W, K, k, s, pads = case
    rng = np.random.default_rng(sum(case[:7]))
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    want = reference(x, w, bias, s, pads)
    with decaf.threads.using_threads(threads):
        got = run(x, w, bias, s, pads)
        plain = run(x, w, None, s, pads)
    tol = 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    np.testing.assert_allclose(plain, reference(x, w, None, s, pads), rtol=0, atol=tol)


@pytest.mark.parametrize("act", [("clamp", 0.0, 6.0, 0.0), ("hardswish", 0.0, 0.0, 0.0), ("silu", 0.0, 0.0, 1.0)])
def test_epilogue(act):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 23, 29)).astype(np.float32)
    w = rng.standard_normal((10, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    v = reference(x, w, bias, 2, (1, 1, 1, 1))
    residual = rng.standard_normal(v.shape).astype(np.float32)
    got = run(x, w, bias, 2, (1, 1, 1, 1), act=act, residual=residual)
    z = v + residual
    want = {"clamp": np.clip(z, 0, 6), "hardswish": z * np.clip(z + 3, 0, 6) / 6,
            "silu": z / (1 + np.exp(-z))}[act[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_each_kernel_variant(isa):
    if not _compiled.isa_supported(isa):
        pytest.skip(f"the {isa} variant does not run here")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 21, 37)).astype(np.float32)
    w = rng.standard_normal((11, 3, 3, 3)).astype(np.float32)
    before = _compiled.isa_current()
    _compiled.isa_select(isa)
    try:
        got = run(x, w, None, 2, (1, 1, 1, 1))
    finally:
        _compiled.isa_select(before)
    want = reference(x, w, None, 2, (1, 1, 1, 1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_not_for_wider_layers():
    """More input channels, larger windows, other strides or a 1x1 kernel (its GEMM reads x as it
    is) keep the other kernels."""
    plan = _compiled.conv_plan
    assert not plan((1, 3, 20, 20), (8, 3, 1, 1), 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (20, 20))["stem"]
    assert not plan((1, 16, 28, 28), (32, 16, 3, 3), 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (28, 28))["stem"]
    assert not plan((1, 3, 224, 224), (64, 3, 7, 7), 1, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), (112, 112))["stem"]
    assert not plan((1, 3, 27, 27), (8, 3, 3, 3), 1, (3, 3), (3, 3), (0, 0, 0, 0), (1, 1), (9, 9))["stem"]
    assert not plan((1, 3, 20, 20), (8, 3, 3, 3), 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (20, 20),
                    backward=True)["stem"]
