"""Winograd F(4x4, 3x3) convolution (csrc/winograd.c) against a float64 NumPy reference.

The reference below is written here, independently of decaf: the padded input, and the nine taps
of the 3x3 kernel summed as shifted channel contractions, all in float64.

Tolerance. Winograd's transforms add and scale many terms before the GEMMs (inputs by up to 5x and
25x in two dimensions, the products by up to 8x and 64x on the way back), so its float32 rounding
error is larger than a direct convolution's. Measured as the largest |error| over the output
relative to the largest |output|, with N(0, 1) inputs and He-scaled weights (std sqrt(2 / 9C)),
pads 1, batch 2, 3 seeds each (Zen 3, AVX2 variant; in brackets conv_forward's, the direct kernel):
    C = K = 64 at 56x56: 6.4e-6 (1.1e-6)      C = K = 128 at 28x28: 9.4e-6 (1.9e-6)
    C = K = 256 at 14x14: 1.1e-5 (2.1e-6)     C = K = 512 at 7x7: 1.3e-5 (3.3e-6)
    C = K = 512 at 14x14: 1.1e-5 (3.1e-6)     C = 128, K = 32 at 56x56: 9.0e-6 (2.0e-6)
and with post-ReLU inputs (|N(0, 1)| half the time, else 0), 2 seeds: 5.9e-6 (64 at 56x56) to
1.25e-5 (256 at 14x14; 512 at 28x28: 1.1e-5). So about 1e-5, 4-6x the direct path's, growing
slowly with C. REL_TOL = 5e-5 keeps a margin of ~4x over the largest measured; the small shapes
of the other tests (few channels) stay well under it.
"""
import numpy as np
import pytest

import decaf
import decaf.blas as blas
import decaf.kernels as kernels

_compiled = kernels._compiled
pytestmark = pytest.mark.skipif(_compiled is None or not blas.have_own_blas(),
                                reason="compiled kernels or decaf's OpenBLAS not available")

REL_TOL = 5e-5


def reference(x, w, bias, pads):
    """conv(x, w) + bias with stride 1, pads (top, left, bottom, right), in float64."""
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    kh, kw = w.shape[2:]
    Ho, Wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    y = np.zeros((x.shape[0], w.shape[0], Ho, Wo))
    for r in range(kh):
        for s in range(kw):
            y += np.einsum("bchw,kc->bkhw", xp[:, :, r:r + Ho, s:s + Wo], w[:, :, r, s].astype(np.float64))
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def run(x, w, bias, pads, act=None, residual=None):
    u = _compiled.winograd_pack(w)
    B, _, H, W = x.shape
    Ho, Wo = H + pads[0] + pads[2] - 2, W + pads[1] + pads[3] - 2
    y = np.full((B, w.shape[0], Ho, Wo), np.nan, np.float32)   # garbage: every output must be written
    _compiled.winograd_forward(x, u, w.shape, bias, y, pads, act=act, residual=residual)
    return y


def case(rng, B, C, H, W, K, with_bias=True):
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) * np.sqrt(2.0 / (9 * C))).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if with_bias else None
    return x, w, bias


# (B, C, H, W, K, pads): odd sizes (partial tiles), 1-pixel outputs, asymmetric pads, channels
# that are not multiples of 8, more tiles than one block (56x56 with B = 3: 588 tiles)
SHAPES = [
    (1, 3, 5, 7, 5, (1, 1, 1, 1)),
    (3, 17, 13, 11, 5, (0, 0, 0, 0)),
    (1, 5, 9, 10, 17, (2, 1, 0, 2)),
    (3, 5, 3, 3, 3, (0, 0, 0, 0)),        # a single output pixel per image
    (1, 3, 1, 1, 5, (1, 1, 1, 1)),        # 1x1 input, all but the centre tap in the padding
    (3, 17, 8, 8, 17, (2, 2, 2, 2)),
    (1, 5, 6, 21, 3, (0, 2, 1, 0)),
    (3, 8, 56, 56, 16, (1, 1, 1, 1)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + f"-p{''.join(map(str, s[5]))}")
def test_matches_reference(shape, threads):
    B, C, H, W, K, pads = shape
    rng = np.random.default_rng(sum(shape[:5]))
    for with_bias in (True, False):
        x, w, bias = case(rng, B, C, H, W, K, with_bias)
        with decaf.threads.using_threads(threads):
            y = run(x, w, bias, pads)
        assert relative_error(y, reference(x, w, bias, pads)) < REL_TOL


@pytest.mark.parametrize("threads", [1, 2])
def test_relu_and_residual(threads):
    rng = np.random.default_rng(7)
    pads = (1, 1, 1, 1)
    x, w, bias = case(rng, 3, 5, 11, 13, 17)
    residual = rng.standard_normal((3, 17, 11, 13)).astype(np.float32)
    expected = reference(x, w, bias, pads)
    with decaf.threads.using_threads(threads):
        relu = run(x, w, bias, pads, act=("clamp", 0.0, np.inf, 0.0))
        both = run(x, w, bias, pads, act=("clamp", 0.0, np.inf, 0.0), residual=residual)
        added = run(x, w, bias, pads, residual=residual)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(relu, np.maximum(expected, 0), rtol=0, atol=REL_TOL * scale)
    assert (relu >= 0).all() and (relu == 0).any()
    np.testing.assert_allclose(added, expected + residual, rtol=0, atol=REL_TOL * scale)
    np.testing.assert_allclose(both, np.maximum(expected + residual, 0), rtol=0, atol=REL_TOL * scale)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_each_kernel_variant(isa):
    """winograd.c is compiled once per instruction set (csrc/isa.h): each variant this CPU runs."""
    if not _compiled.isa_supported(isa):
        pytest.skip(f"the {isa} variant does not run here")
    rng = np.random.default_rng(11)
    x, w, bias = case(rng, 3, 17, 30, 13, 20)
    before = _compiled.isa_current()
    _compiled.isa_select(isa)
    try:
        with decaf.threads.using_threads(2):
            y = run(x, w, bias, (1, 2, 0, 1), act=("clamp", 0.0, 6.0, 0.0))
    finally:
        _compiled.isa_select(before)
    expected = np.clip(reference(x, w, bias, (1, 2, 0, 1)), 0, 6)
    np.testing.assert_allclose(y, expected, rtol=0, atol=REL_TOL * np.abs(expected).max())


def test_given_work():
    """Scratch space given by the caller (garbage in it) gives the same result as allocated."""
    rng = np.random.default_rng(5)
    x, w, bias = case(rng, 2, 9, 17, 15, 11)
    u = _compiled.winograd_pack(w)
    work = np.full(_compiled.winograd_work_size(x.shape, w.shape, (1, 1, 1, 1)), np.nan, np.float32)
    y = np.empty((2, 11, 17, 15), np.float32)
    _compiled.winograd_forward(x, u, w.shape, bias, y, (1, 1, 1, 1), work=work)
    np.testing.assert_array_equal(y, run(x, w, bias, (1, 1, 1, 1)))


def test_threads_agree_exactly():
    """With few tiles the threads share each block, cut as with one thread: the split changes who
    computes a value, not how, and 1 and 2 threads give the same bits. (With a block per thread the
    blocks are cut differently, and the GEMMs may round differently.)"""
    rng = np.random.default_rng(3)
    x, w, bias = case(rng, 3, 17, 30, 29, 24)
    with decaf.threads.using_threads(1):
        one = run(x, w, bias, (1, 1, 1, 1))
    with decaf.threads.using_threads(2):
        two = run(x, w, bias, (1, 1, 1, 1))
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("C, HW, K", [(64, 28, 64), (256, 14, 256), (512, 7, 512)])
def test_error_bound_realistic_layers(C, HW, K):
    """The bound of the module docstring on layers of real networks' sizes."""
    rng = np.random.default_rng(C)
    x, w, _ = case(rng, 2, C, HW, HW, K, with_bias=False)
    err = relative_error(run(x, w, None, (1, 1, 1, 1)), reference(x, w, None, (1, 1, 1, 1)))
    assert 0 < err < REL_TOL


def test_supported_and_preferred():
    assert _compiled.winograd_supported((1, 8, 10, 10), (4, 8, 3, 3), (1, 1, 1, 1))
    assert _compiled.winograd_supported((2, 3, 2, 9), (4, 3, 3, 3), (0, 0, 1, 0))
    assert not _compiled.winograd_supported((1, 8, 10, 10), (4, 8, 5, 5), (1, 1, 1, 1))     # 5x5
    assert not _compiled.winograd_supported((1, 8, 10, 10), (4, 4, 3, 3), (1, 1, 1, 1))     # 2 groups
    assert not _compiled.winograd_supported((0, 8, 10, 10), (4, 8, 3, 3), (1, 1, 1, 1))     # no image
    assert not _compiled.winograd_preferred((1, 8, 10, 10), (4, 4, 3, 3), (1, 1, 1, 1), 2)  # unsupported
    # the rule of csrc/winograd.c (C K / (C + K) >= 32, >= 16 tiles), measured on Zen 3
    assert _compiled.winograd_preferred((1, 64, 56, 56), (64, 64, 3, 3), (1, 1, 1, 1), 2)
    assert _compiled.winograd_preferred((1, 256, 14, 14), (256, 256, 3, 3), (1, 1, 1, 1), 2)   # 16 tiles
    assert not _compiled.winograd_preferred((1, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1), 2)  # 4 tiles
    assert _compiled.winograd_preferred((16, 512, 7, 7), (512, 512, 3, 3), (1, 1, 1, 1), 2)
    assert not _compiled.winograd_preferred((16, 128, 28, 28), (32, 128, 3, 3), (1, 1, 1, 1), 2)  # K = 32
    assert not _compiled.winograd_preferred((1, 3, 224, 224), (64, 3, 3, 3), (1, 1, 1, 1), 2)     # C = 3


def test_bad_shapes_raise():
    rng = np.random.default_rng(0)
    x, w, bias = case(rng, 1, 4, 6, 6, 5)
    u = _compiled.winograd_pack(w)
    assert u.shape == (36 * 5 * 4,) and u.dtype == np.float32
    y = np.empty((1, 5, 6, 6), np.float32)
    pads = (1, 1, 1, 1)
    fwd = _compiled.winograd_forward
    with pytest.raises(ValueError, match="5x5 kernel"):
        _compiled.winograd_pack(np.zeros((5, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="7x7 kernel"):
        _compiled.winograd_pack(np.zeros((5, 4, 7, 7), np.float32))
    with pytest.raises(ValueError, match="5x5 kernel"):
        fwd(x, u, (5, 4, 5, 5), bias, np.empty((1, 5, 4, 4), np.float32), pads)
    with pytest.raises(ValueError, match="y has shape"):
        fwd(x, u, w.shape, bias, np.empty((1, 5, 5, 5), np.float32), pads)
    with pytest.raises(ValueError, match="u has 700 floats"):
        fwd(x, u[:700], w.shape, bias, y, pads)
    with pytest.raises(ValueError, match="one group"):
        fwd(x, u, (5, 2, 3, 3), bias, y, pads)
    with pytest.raises(ValueError, match="bias has shape"):
        fwd(x, u, w.shape, bias[:3], y, pads)
    with pytest.raises(ValueError, match="residual has shape"):
        fwd(x, u, w.shape, bias, y, pads, residual=np.zeros((1, 5, 6, 5), np.float32))
    with pytest.raises(ValueError, match="residual must not be y"):
        fwd(x, u, w.shape, bias, y, pads, residual=y)
    with pytest.raises(ValueError, match="work has 10 floats"):
        fwd(x, u, w.shape, bias, y, pads, work=np.empty(10, np.float32))
    with pytest.raises(ValueError, match="pads must be 4 ints"):
        fwd(x, u, w.shape, bias, y, (1, 1))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        _compiled.winograd_supported((1, 4, 1, 1), (5, 4, 3, 3), (0, 0, 0, 0))
    with pytest.raises(ValueError):   # float64 input: Cython's dtype check
        fwd(x.astype(np.float64), u, w.shape, bias, y, pads)


# ---- the weight gradient (decaf_winograd_weight_grad) -------------------------------------------
# Its float32 error, measured against conv_backward's im2col + GEMM (itself ~1e-7 of float64) with
# N(0, 1) x and dy at batch 64 (Zen 3, AVX2): 2e-6..6.5e-6 of the largest |dw| on ResNet's and
# CaffeNet's 3x3 layers (64 at 56x56 to 512 at 7x7, 384 -> 256 at 13x13). Checked at REL_TOL.

def reference_weight_grad(x, dy, pads):
    """(dw, db) of the stride-1 3x3 convolution for output gradient dy, in float64."""
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dy64 = dy.astype(np.float64)
    Ho, Wo = dy.shape[2:]
    dw = np.empty((dy.shape[1], x.shape[1], 3, 3))
    for r in range(3):
        for s in range(3):
            dw[:, :, r, s] = np.einsum("bkhw,bchw->kc", dy64, xp[:, :, r:r + Ho, s:s + Wo])
    return dw, dy64.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + f"-p{''.join(map(str, s[5]))}")
def test_weight_grad_matches_reference(shape, threads):
    """Partial tiles (their outputs past Ho, Wo have no gradient), 1-pixel outputs, asymmetric pads,
    more tiles than a block; with and without db."""
    B, C, H, W, K, pads = shape
    rng = np.random.default_rng(sum(shape[:5]) + 1)
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    Ho, Wo = H + pads[0] + pads[2] - 2, W + pads[1] + pads[3] - 2
    dy = rng.standard_normal((B, K, Ho, Wo)).astype(np.float32)
    want_dw, want_db = reference_weight_grad(x, dy, pads)
    dw = np.full((K, C, 3, 3), np.nan, np.float32)            # garbage: all of it must be written
    db = np.full(K, np.nan, np.float32)
    with decaf.threads.using_threads(threads):
        _compiled.winograd_weight_grad(x, dy, dw, db, pads)
        assert relative_error(dw, want_dw) < REL_TOL
        np.testing.assert_allclose(db, want_db, rtol=1e-5, atol=1e-5 * np.abs(want_db).max())
        dw2 = np.full_like(dw, np.nan)
        _compiled.winograd_weight_grad(x, dy, dw2, None, pads,
                                       work=np.full(10 ** 6, np.nan, np.float32))   # given scratch
    np.testing.assert_array_equal(dw2, dw)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_weight_grad_each_kernel_variant(isa):
    if not _compiled.isa_supported(isa):
        pytest.skip(f"the {isa} variant does not run here")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 9, 13, 10)).astype(np.float32)
    dy = rng.standard_normal((2, 7, 13, 10)).astype(np.float32)
    dw = np.empty((7, 9, 3, 3), np.float32)
    before = _compiled.isa_current()
    _compiled.isa_select(isa)
    try:
        _compiled.winograd_weight_grad(x, dy, dw, None, (1, 1, 1, 1))
    finally:
        _compiled.isa_select(before)
    assert relative_error(dw, reference_weight_grad(x, dy, (1, 1, 1, 1))[0]) < REL_TOL


def test_weight_grad_through_conv_backward():
    """conv_backward(weights_only=True) picks Winograd where the forward would (the plan says so) and
    gives what the im2col + GEMM backward gives, within REL_TOL."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 64, 12, 12)).astype(np.float32)           # 72 tiles
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((8, 64, 12, 12)).astype(np.float32)
    geo = (1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (12, 12))
    assert _compiled.conv_plan(x.shape, w.shape, *geo, backward="weights")["winograd"]
    # below 64 tiles the transform of dU back costs more than it saves: the GEMM path
    assert not _compiled.conv_plan((4, 64, 12, 12), w.shape, *geo, backward="weights")["winograd"]
    assert not _compiled.conv_plan(x.shape, w.shape, *geo, backward=True)["winograd"]
    got, want = [np.empty_like(w) for _ in range(2)], [np.empty(64, np.float32) for _ in range(2)]
    for i, only in enumerate((True, False)):
        work = np.empty(kernels.conv_work_size(x, w, *geo, backward="weights" if only else True), np.float32)
        kernels.conv_backward(x, w, dy, None, got[i], want[i], work, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1,
                              weights_only=only)
    assert relative_error(got[0], got[1].astype(np.float64)) < REL_TOL
    np.testing.assert_allclose(want[0], want[1], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="dx must be None"):
        kernels.conv_backward(x, w, dy, np.empty_like(x), got[0], None, work, (3, 3), (1, 1), (1, 1, 1, 1),
                              (1, 1), 1, weights_only=True)


def test_weight_grad_bad_shapes_raise():
    x = np.zeros((1, 4, 6, 6), np.float32)
    dy = np.zeros((1, 5, 6, 6), np.float32)
    pads = (1, 1, 1, 1)
    with pytest.raises(ValueError, match="dy has shape"):
        _compiled.winograd_weight_grad(x, dy[:, :, :5].copy(), np.empty((5, 4, 3, 3), np.float32), None, pads)
    with pytest.raises(ValueError, match="5x5 kernel"):
        _compiled.winograd_weight_grad(x, dy[:, :, 1:5, 1:5].copy(), np.empty((5, 4, 5, 5), np.float32), None, pads)
    with pytest.raises(ValueError, match="db has shape"):
        _compiled.winograd_weight_grad(x, dy, np.empty((5, 4, 3, 3), np.float32), np.empty(4, np.float32), pads)
    with pytest.raises(ValueError, match="work has"):
        _compiled.winograd_weight_grad(x, dy, np.empty((5, 4, 3, 3), np.float32), None, pads,
                                       work=np.empty(10, np.float32))


# ---- grouped convolutions, group by group (csrc/conv.c) -------------------------------------------

def grouped_reference(x, w, bias, pads, G):
    kg, cg = w.shape[0] // G, x.shape[1] // G
    parts = [reference(x[:, g * cg:(g + 1) * cg], w[g * kg:(g + 1) * kg], None, pads) for g in range(G)]
    y = np.concatenate(parts, axis=1)
    return y if bias is None else y + bias.astype(np.float64)[None, :, None, None]


@pytest.mark.parametrize("threads", [1, 2])
def test_grouped_forward_and_weight_grad_through_the_conv_plan(threads):
    """CaffeNet's conv4 shape, smaller: 2 groups of 64 channels at 13x13. The plan picks Winograd
    for the prepacked forward and for the weight gradient; both match float64 group by group, with
    the bias, a residual and a ReLU applied on each group's planes."""
    rng = np.random.default_rng(21)
    G, B, C, K, H = 2, 4, 128, 128, 13        # 64 tiles: the least grouped Winograd takes
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, C // G, 3, 3)) * np.sqrt(2.0 / (9 * C // G))).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    residual = rng.standard_normal((B, K, H, H)).astype(np.float32)
    geo = (G, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (H, H))
    with decaf.threads.using_threads(threads):
        assert _compiled.conv_plan(x.shape, w.shape, *geo, prepacked=True)["winograd"]
        assert _compiled.conv_plan(x.shape, w.shape, *geo, backward="weights")["winograd"]
        # one image: 16 tiles, too few for the groups' Winograd (the direct kernel was faster)
        assert not _compiled.conv_plan((1, C, H, H), w.shape, *geo, prepacked=True)["winograd"]
        kind, size = kernels.conv_packing(x, w, *geo)
        packed = np.empty(size, np.float32)
        kernels.conv_pack(x, w, packed, *geo)
        y = np.full((B, K, H, H), np.nan, np.float32)
        work = np.full(kernels.conv_work_size(x, w, *geo, False, True), np.nan, np.float32)
        kernels.conv_forward(x, w, bias, y, work, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), G,
                             act=("clamp", 0.0, np.inf, 0.0), residual=residual, packed=(kind, packed))
        want = np.maximum(grouped_reference(x, w, bias, (1, 1, 1, 1), G) + residual, 0)
        assert relative_error(y, want) < REL_TOL
        dy = rng.standard_normal((B, K, H, H)).astype(np.float32)
        dw, db = np.full_like(w, np.nan), np.full(K, np.nan, np.float32)
        work = np.full(kernels.conv_work_size(x, w, *geo, backward="weights"), np.nan, np.float32)
        kernels.conv_backward(x, w, dy, None, dw, db, work, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), G,
                              weights_only=True)
    kg, cg = K // G, C // G
    for g in range(G):
        want_dw, want_db = reference_weight_grad(x[:, g * cg:(g + 1) * cg], dy[:, g * kg:(g + 1) * kg], (1, 1, 1, 1))
        assert relative_error(dw[g * kg:(g + 1) * kg], want_dw) < REL_TOL
        np.testing.assert_allclose(db[g * kg:(g + 1) * kg], want_db, rtol=1e-5, atol=1e-4)
