"""The direct 1x1 convolution kernel (csrc/pointwise.c): pointwise_forward with and without packed
weights, and conv_forward where its plan picks the kernel, against a float64 NumPy reference (an
einsum, the bias, the residual and the activation from their formulas).

Tolerance: float32 sums in another order (FMAs over input channels, in chunks) than the float64
reference: |y - ref| <= 1e-5 of the largest |value before the activation| (plus 1e-5 relative),
as for the other convolution kernels.
"""
import numpy as np
import pytest

import decaf
import decaf.blas as blas
from decaf import cpu
from decaf.threads import using_threads

from act_reference import act_f64

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

# act tuples (kind, lo, hi, alpha) as conv_forward takes them
ACTS = [None, ("clamp", 0.0, 6.0, 0.0), ("leaky", 0.0, 0.0, 0.1), ("hardswish", 0.0, 0.0, 0.0),
        ("silu", 0.0, 0.0, 1.0), ("sigmoid", 0.0, 0.0, 0.0), ("hardsigmoid", 0.5, 1.0, 0.2),
        ("clamp", 0.0, float("inf"), 0.0)]


def reference(x, w, bias, residual, act):
    """(y after the activation, y before it) in float64."""
    v = np.einsum("kc,bchw->bkhw", w[:, :, 0, 0].astype(np.float64), x.astype(np.float64))
    if bias is not None:
        v += bias.astype(np.float64)[None, :, None, None]
    if residual is not None:
        v += residual
    return act_f64(v, act), v


def check(y, x, w, bias, residual, act):
    ref, pre = reference(x, w, bias, residual, act)
    scale = float(np.abs(pre).max())
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * scale)


def arrays(rng, B, C, K, H, W, with_bias, with_residual):
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = (rng.standard_normal((K, C, 1, 1)) / np.sqrt(C)).astype(F32)
    bias = rng.standard_normal(K).astype(F32) if with_bias else None
    residual = rng.standard_normal((B, K, H, W)).astype(F32) if with_residual else None
    return x, w, bias, residual


# (B, C, K, H, W): C and K not multiples of 6, 8 or 16; P = H W from 1 to 20 and odd (tiles of 16
# and 8 and the narrower tails), and larger planes: several bands (small C, P > 512), chunks of
# input channels (C = 200 on 64-pixel bands), channel blocks split over threads (one small image).
SHAPES = [(1, 1, 1, 1, 1), (3, 5, 7, 1, 1), (1, 7, 13, 3, 5), (3, 13, 5, 2, 1), (1, 3, 11, 4, 5),
          (3, 17, 19, 3, 3), (1, 9, 10, 1, 7), (1, 20, 23, 4, 4), (3, 11, 6, 1, 13), (1, 33, 50, 2, 10),
          (1, 19, 29, 33, 35), (2, 200, 17, 9, 9), (1, 70, 130, 7, 7), (1, 9, 100, 13, 11),
          (3, 300, 7, 5, 3)]


@pytest.mark.parametrize("threads", [1, 2])
def test_pointwise_forward_matches_reference(isa, threads):
    rng = np.random.default_rng(13 + threads)
    with using_threads(threads):
        for i, (B, C, K, H, W) in enumerate(SHAPES):
            act = ACTS[i % len(ACTS)]
            x, w, bias, residual = arrays(rng, B, C, K, H, W, i % 3 != 1, i % 2 == 0)
            y = np.full((B, K, H, W), np.nan, F32)
            _compiled.pointwise_forward(x, w, bias, y, act=act, residual=residual)
            check(y, x, w, bias, residual, act)
            y.fill(np.nan)   # the packed form (6 weights side by side: the narrow tails differ)
            _compiled.pointwise_forward(x, w, bias, y, act=act, residual=residual,
                                        packed=_compiled.pointwise_pack(w))
            check(y, x, w, bias, residual, act)


@pytest.mark.parametrize("act", [None, ("clamp", 0.0, 6.0, 0.0)], ids=["none", "relu6"])
def test_residual_and_clamp_in_the_registers_on_every_shape(isa, act):
    """The residual add and a clamp are done before the last store (tiles of 16 and 8 pixels and the
    pixel-by-pixel tail, chunked input channels): every shape, with and without the packed form."""
    rng = np.random.default_rng(21)
    for B, C, K, H, W in SHAPES:
        x, w, bias, residual = arrays(rng, B, C, K, H, W, True, True)
        for packed in (None, _compiled.pointwise_pack(w)):
            y = np.full((B, K, H, W), np.nan, F32)
            _compiled.pointwise_forward(x, w, bias, y, act=act, residual=residual, packed=packed)
            check(y, x, w, bias, residual, act)


def test_every_activation_on_one_layer(isa):
    rng = np.random.default_rng(5)
    x, w, bias, residual = arrays(rng, 2, 29, 31, 5, 7, True, True)
    for act in ACTS:
        for res in (None, residual):
            y = np.full((2, 31, 5, 7), np.nan, F32)
            _compiled.pointwise_forward(x, w, bias, y, act=act, residual=res)
            check(y, x, w, bias, res, act)


GEOM = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))


@pytest.mark.skipif(not blas.have_own_blas(), reason="decaf's OpenBLAS is not loaded")
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_forward_runs_the_kernel_where_preferred(isa, threads):
    """A narrow-input expansion layer (16 -> 67 channels, 17x19): the plan picks the pointwise kernel
    in the AVX2 / AVX-512 variants (not in the generic one), through conv_forward with w as it is
    and with the weights packed once (conv_packing / conv_pack); results as the reference."""
    rng = np.random.default_rng(7)
    B, C, K, H, W = 3 if threads == 2 else 1, 16, 67, 17, 19
    x, w, bias, residual = arrays(rng, B, C, K, H, W, True, True)
    act = ("clamp", 0.0, 6.0, 0.0)
    with using_threads(threads):
        plan = _compiled.conv_plan(x.shape, w.shape, 1, *GEOM, (H, W))
        assert plan["pointwise"] == (isa != "generic")
        kind, size = _compiled.conv_packing(x.shape, w.shape, 1, *GEOM, (H, W))
        if isa != "generic":
            assert (kind % 16, size) == (4, ((K + 5) // 6) * 6 * C)   # DECAF_PACK_POINTWISE
        work = np.empty(max(plan["work"], 1), F32)
        y = np.full((B, K, H, W), np.nan, F32)
        _compiled.conv_forward(x, w, bias, y, work, *GEOM, 1, act=act, residual=residual)
        check(y, x, w, bias, residual, act)
        if kind:
            packed = np.empty(size, F32)
            _compiled.conv_pack(x.shape, w, packed, 1, *GEOM, (H, W))
            y.fill(np.nan)
            _compiled.conv_forward(x, w, bias, y, work, *GEOM, 1, act=act, residual=residual,
                                   packed=(kind, packed))
            check(y, x, w, bias, residual, act)


def test_preferred_only_for_narrow_inputs_that_do_not_shrink():
    simd = cpu.get_isa() != "generic"
    assert _compiled.pointwise_preferred((1, 16, 112, 112), (96, 16, 1, 1), 2) == simd
    assert _compiled.pointwise_preferred((1, 24, 56, 56), (72, 24, 1, 1), 2) == simd     # widens 3x
    assert _compiled.pointwise_preferred((1, 16, 112, 112), (16, 16, 1, 1), 2) == simd   # as wide
    assert not _compiled.pointwise_preferred((2, 32, 112, 112), (16, 32, 1, 1), 2)    # shrinks
    # ... unless its input is 4 MB or more (prefetched by the kernel)
    assert _compiled.pointwise_preferred((4, 32, 112, 112), (16, 32, 1, 1), 2) == simd
    assert _compiled.pointwise_preferred((16, 48, 56, 56), (24, 48, 1, 1), 2) == simd
    assert not _compiled.pointwise_preferred((16, 72, 56, 56), (24, 72, 1, 1), 2)    # not narrow
    assert not _compiled.pointwise_preferred((2, 58, 28, 28), (58, 58, 1, 1), 2)      # a wider input
    assert not _compiled.pointwise_preferred((2, 96, 56, 56), (24, 96, 1, 1), 2)    # a projection
    # fewer images than threads: inputs up to 128 channels on planes of 28x28 and up
    assert _compiled.pointwise_preferred((1, 58, 28, 28), (58, 58, 1, 1), 2) == simd
    assert _compiled.pointwise_preferred((1, 96, 56, 56), (24, 96, 1, 1), 2) == simd
    assert not _compiled.pointwise_preferred((1, 96, 56, 56), (24, 96, 1, 1), 1)
    assert not _compiled.pointwise_preferred((1, 116, 14, 14), (116, 116, 1, 1), 2)   # 14x14
    assert not _compiled.pointwise_preferred((1, 160, 28, 28), (64, 160, 1, 1), 2)    # wider still
    # planes of 4x4 to 8x8 pixels: every width, every batch (the weights read once, prefetched)
    assert _compiled.pointwise_preferred((1, 32, 7, 7), (192, 32, 1, 1), 2) == simd
    assert _compiled.pointwise_preferred((16, 2048, 7, 7), (512, 2048, 1, 1), 2) == simd
    assert _compiled.pointwise_preferred((1, 400, 4, 4), (400, 400, 1, 1), 1) == simd
    assert _compiled.pointwise_preferred((1, 1280, 8, 8), (320, 1280, 1, 1), 1) == simd
    assert not _compiled.pointwise_preferred((1, 960, 1, 1), (240, 960, 1, 1), 1)    # one pixel (SE): GEMV
    assert not _compiled.pointwise_preferred((1, 400, 3, 5), (400, 400, 1, 1), 1)    # 15 pixels
    assert not _compiled.pointwise_preferred((1, 400, 9, 9), (400, 400, 1, 1), 1)    # 81 pixels
    plan = _compiled.conv_plan((1, 16, 9, 9), (96, 16, 3, 3), 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (9, 9))
    assert not plan["pointwise"]                                                   # not 1x1


@pytest.mark.parametrize("threads", [1, 2])
def test_inputs_of_4_mb_and_more_prefetched_with_the_same_values(isa, threads):
    """Inputs of 4 MB and more are prefetched a band ahead (csrc/pointwise.c, pw_prefetch): several
    images, bands and chunks of input channels, an odd plane (the last band short), with and
    without the packed form and the residual, equal the float64 reference."""
    rng = np.random.default_rng(17 + threads)
    with using_threads(threads):
        for B, C, K, H, W in [(3, 37, 22, 99, 99), (1, 48, 29, 150, 151)]:
            assert B * C * H * W * 4 >= 4 << 20
            x, w, bias, residual = arrays(rng, B, C, K, H, W, True, True)
            for packed, res in ((None, residual), (_compiled.pointwise_pack(w), None)):
                y = np.full((B, K, H, W), np.nan, F32)
                _compiled.pointwise_forward(x, w, bias, y, act=("clamp", 0.0, 6.0, 0.0), residual=res,
                                            packed=packed)
                check(y, x, w, bias, res, ("clamp", 0.0, 6.0, 0.0))


@pytest.mark.skipif(not blas.have_own_blas(), reason="decaf's OpenBLAS is not loaded")
@pytest.mark.parametrize("threads", [1, 2])
def test_small_planes_through_the_plan_with_the_weights_prefetched(isa, threads):
    """Planes of 4x4 to 8x8 go to the kernel (AVX2 / AVX-512), which brings each block's weights in
    while the block before runs (csrc/pointwise.c, tile16's wnext): wide layers whose input channels
    come in several chunks (the prefetch follows the chunk), output channels not a multiple of 6,
    with the packed weights of conv_pack as a net's plan runs them; results as the reference."""
    rng = np.random.default_rng(29 + threads)
    act = ("clamp", 0.0, 6.0, 0.0)
    with using_threads(threads):
        for B, C, K, H, W in [(1, 400, 403, 7, 7), (2, 250, 37, 8, 8), (1, 33, 20, 4, 4), (3, 130, 61, 5, 6)]:
            x, w, bias, residual = arrays(rng, B, C, K, H, W, True, B != 2)
            geom = (*GEOM, (H, W))
            plan = _compiled.conv_plan(x.shape, w.shape, 1, *geom)
            assert plan["pointwise"] == (isa != "generic")
            kind, size = _compiled.conv_packing(x.shape, w.shape, 1, *geom)
            work = np.empty(max(plan["work"], 1), F32)
            packed = None
            if kind:
                buf = np.empty(size, F32)
                _compiled.conv_pack(x.shape, w, buf, 1, *geom)
                packed = (kind, buf)
            y = np.full((B, K, H, W), np.nan, F32)
            _compiled.conv_forward(x, w, bias, y, work, *GEOM, 1, act=act, residual=residual, packed=packed)
            check(y, x, w, bias, residual, act)


def test_bad_shapes_raise():
    x = np.zeros((1, 4, 3, 3), F32)
    with pytest.raises(ValueError, match="w"):
        _compiled.pointwise_forward(x, np.zeros((5, 3, 1, 1), F32), None, np.zeros((1, 5, 3, 3), F32))
    with pytest.raises(ValueError, match="w"):
        _compiled.pointwise_forward(x, np.zeros((5, 4, 3, 3), F32), None, np.zeros((1, 5, 3, 3), F32))
    with pytest.raises(ValueError, match="y"):
        _compiled.pointwise_forward(x, np.zeros((5, 4, 1, 1), F32), None, np.zeros((1, 5, 3, 2), F32))


def test_a_net_follows_the_plan_across_batch_sizes(isa):
    """The plan for a 64 -> 64 layer at 28x28 depends on the batch (the kernel at batch 1 on two
    threads, the GEMM at 2 and 3): a net's weights, packed for one plan, are packed again for the
    other, and every batch size equals a float64 NumPy product."""
    spec = {"name": "pw", "inputs": {"data": [64, 28, 28]},
            "layers": [{"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": 64,
                        "kernel_size": 1}]}
    rng = np.random.default_rng(3)
    with using_threads(2):
        net = decaf.Net(spec)
        for p in net.params.values():
            p.data[...] = rng.standard_normal(p.shape)
        w = net.params["c.weight"].data.reshape(64, 64).astype(np.float64)
        b = net.params["c.bias"].data.astype(np.float64)
        for B in (1, 3, 1, 2):
            plan = _compiled.conv_plan((B, 64, 28, 28), (64, 64, 1, 1), 1, *GEOM, (28, 28), prepacked=True)
            assert plan["pointwise"] == (B == 1 and isa != "generic")
            x = rng.standard_normal((B, 64, 28, 28)).astype(F32)
            want = np.einsum("kc,nchw->nkhw", w, x) + b[None, :, None, None]
            np.testing.assert_allclose(net.forward(data=x)["c"], want, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(_compiled.isa_current() == "generic", reason="the streamed stores are in the vector kernel")
def test_outputs_larger_than_the_last_cache_are_streamed_with_the_same_values():
    """An output past the last-level cache with a clamp alone (ReLU6) is clamped in the registers
    and stored past the caches (non-temporal stores, csrc/pointwise.c): the same values, a NaN
    kept, as the float64 reference; below that size the same kernel stores as usual."""
    limit = _compiled.last_cache_bytes()
    if limit > 64 * 1024 * 1024:
        pytest.skip(f"a last-level cache of {limit >> 20} MB: the test would need a larger output")
    rng = np.random.default_rng(5)
    C, K, side = 16, 48, 160
    B = int(limit // (K * side * side * 4)) + 1            # just past it
    x = rng.standard_normal((B, C, side, side)).astype(F32)
    x[0, 3, 7, 9] = np.nan
    w = rng.standard_normal((K, C, 1, 1)).astype(F32) / 4
    bias = rng.standard_normal(K).astype(F32)
    act = ("clamp", 0.0, 6.0, 0.0)
    assert _compiled.pointwise_preferred(x.shape, w.shape, 2)
    for images in (B, 1):                                  # streamed, then cached
        y = np.full((images, K, side, side), -1.0, F32)
        _compiled.pointwise_forward(x[:images], w, bias, y, act=act)
        assert np.isnan(y[0, :, 7, 9]).all()
        y[0, :, 7, 9] = 0
        xi = x[:images].copy()
        xi[0, 3, 7, 9] = 0
        ref, pre = reference(xi, w, bias, None, act)
        ref[0, :, 7, 9] = 0
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(pre).max()))
