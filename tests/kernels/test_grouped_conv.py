"""The direct grouped convolution (csrc/grouped_conv.c, grouped_conv_forward) against a float64 NumPy
reference written here from the definition (windows of the zero-padded input, one einsum per
group), over random geometries: groups 2..55, 1..24 channels per group in and out (not both 1),
1x1 / 3x3 / 5x5 kernels, strides 1 and 2, pads 0..2 (top, left, bottom, right independently),
odd sizes, batch 1 and 3, with and without bias, ReLU / SiLU and a residual, weights packed per
call or once (grouped_conv_pack), on 1, 2 and 3 threads (bands of output rows, uneven splits),
in every instruction set variant this CPU runs (the generic one runs the plain-loop fallback).

Tolerance: the kernel sums up to Cg kh kw = 600 float32 products per output (FMAs, in tap order);
the error of such a sum is far below 1e-5 of the largest |output| (which is the bound used, atol =
rtol = 1e-5 max|ref|); SiLU adds its polynomial exponential's 2 ulp.
"""
import numpy as np
import pytest

from decaf import cpu
from decaf.threads import using_threads

_compiled = pytest.importorskip("decaf.kernels._compiled")
F32 = np.float32

RELU = ("clamp", 0.0, float("inf"), 0.0)
SILU = ("silu", 0.0, 0.0, 1.0)


def reference(x, w, bias, stride, pads, group, act=None, residual=None):
    """float64 grouped convolution (cross-correlation) from its definition."""
    B, C, H, W = x.shape
    K, Cg, kh, kw = w.shape
    pt, pl, pb, pr = pads
    sh, sw = stride
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    Ho, Wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))   # (B, C, H', W', kh, kw)
    win = win[:, :, ::sh, ::sw][:, :, :Ho, :Wo]
    win = win.reshape(B, group, Cg, Ho, Wo, kh, kw)
    wg = w.astype(np.float64).reshape(group, K // group, Cg, kh, kw)
    y = np.einsum("bgchwij,gkcij->bgkhw", win, wg).reshape(B, K, Ho, Wo)
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    if residual is not None:
        y += residual
    if act == RELU:
        y = np.maximum(y, 0.0)
    elif act == SILU:
        y = y / (1.0 + np.exp(-y))
    return y


def random_case(rng):
    """A random geometry within the ranges of the module docstring."""
    sizes = [1, 2, 3, 4, 8, 16, 24]
    while True:
        Cg, Kg = rng.choice(sizes), rng.choice(sizes)
        if not (Cg == 1 and Kg == 1):
            break
    group = int(rng.integers(2, 56)) if Cg * Kg <= 16 else int(rng.integers(2, 9))
    k = int(rng.choice([1, 3, 5]))
    s = int(rng.choice([1, 2]))
    pads = tuple(int(v) for v in rng.integers(0, 3, size=4))
    H = int(rng.integers(max(k, 3), 20)) | 1   # odd
    W = int(rng.integers(max(k, 3), 24)) | 1
    B = int(rng.choice([1, 3]))
    return B, group, int(Cg), int(Kg), H, W, k, s, pads


def run_case(rng, B, group, Cg, Kg, H, W, k, s, pads, with_bias, act, with_residual, prepacked=False):
    C, K = group * Cg, group * Kg
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = rng.standard_normal((K, Cg, k, k)).astype(F32)
    bias = rng.standard_normal(K).astype(F32) if with_bias else None
    Ho, Wo = (H + pads[0] + pads[2] - k) // s + 1, (W + pads[1] + pads[3] - k) // s + 1
    residual = rng.standard_normal((B, K, Ho, Wo)).astype(F32) if with_residual else None
    y = np.full((B, K, Ho, Wo), np.nan, F32)   # every output must be written
    packed = _compiled.grouped_conv_pack(w, group) if prepacked else None
    _compiled.grouped_conv_forward(x, w, bias, y, (s, s), pads, group, act=act, residual=residual, packed=packed)
    ref = reference(x, w, bias, (s, s), pads, group, act, residual)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * scale,
                               err_msg=f"B={B} G={group} Cg={Cg} Kg={Kg} {H}x{W} k={k} s={s} pads={pads}")


@pytest.fixture(params=cpu.supported_isas())
def isa(request):
    before = cpu.get_isa()
    cpu.set_isa(request.param)
    yield request.param
    cpu.set_isa(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_random_geometries(isa, threads):
    rng = np.random.default_rng(1300 + threads)
    cases = 40 if isa != "generic" else 12
    with using_threads(threads):
        for n in range(cases):
            case = random_case(rng)
            run_case(rng, *case, with_bias=n % 2 == 0, act=[None, RELU, SILU][n % 3],
                     with_residual=n % 4 == 1, prepacked=n % 5 == 2)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layer", [
    # (B, group, Cg, Kg, H, W, k, s, pads): RegNetY-400MF's grouped 3x3 (group width 8) and ResNeXt-50 32x4d's
    (1, 6, 8, 8, 112, 112, 3, 2, (1, 1, 1, 1)), (1, 6, 8, 8, 56, 56, 3, 1, (1, 1, 1, 1)),
    (1, 13, 8, 8, 28, 28, 3, 1, (1, 1, 1, 1)), (3, 26, 8, 8, 14, 14, 3, 1, (1, 1, 1, 1)),
    (1, 55, 8, 8, 7, 7, 3, 1, (1, 1, 1, 1)), (1, 32, 4, 4, 56, 56, 3, 1, (1, 1, 1, 1)),
    (1, 32, 16, 16, 28, 28, 3, 2, (1, 1, 1, 1)), (1, 32, 32, 32, 7, 7, 3, 1, (1, 1, 1, 1)),
    # 6 rows of one vector, 2 outputs per group: the 2x6 tile (the rarest of the random cases)
    (1, 16, 3, 2, 6, 8, 3, 1, (1, 1, 1, 1)),
])
def test_network_layers(layer, threads):
    """The shapes the kernel is for, at full size, in the variant in use."""
    rng = np.random.default_rng(13)
    with using_threads(threads):
        run_case(rng, *layer, with_bias=True, act=RELU, with_residual=layer[0] == 3)


def test_supported():
    geom = dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), out_hw=(8, 8))
    fast = cpu.get_isa() != "generic"
    assert _compiled.grouped_conv_supported((1, 16, 8, 8), (16, 2, 3, 3), 8, dilation=(1, 1), **geom) == fast
    # depthwise stays with depthwise.c; a dilated or ungrouped convolution is not this kernel's
    assert not _compiled.grouped_conv_supported((1, 16, 8, 8), (16, 1, 3, 3), 16, dilation=(1, 1), **geom)
    assert not _compiled.grouped_conv_supported((1, 16, 8, 8), (16, 2, 3, 3), 8, dilation=(2, 2), **geom)
    assert not _compiled.grouped_conv_supported((1, 16, 8, 8), (16, 16, 3, 3), 1, dilation=(1, 1), **geom)
    # one input channel per group but two outputs (a channel multiplier) is grouped, not depthwise
    assert _compiled.grouped_conv_supported((1, 16, 8, 8), (32, 1, 3, 3), 16, dilation=(1, 1), **geom) == fast


def test_preferred():
    """The benchmark's verdict (csrc/grouped_conv.c): the kernel where a side has <= 8 channels per group."""
    fast = cpu.get_isa() != "generic"
    geom = dict(kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), out_hw=(7, 7))
    assert _compiled.grouped_conv_preferred((1, 440, 7, 7), (440, 8, 3, 3), 55, **geom) == fast   # RegNetY
    assert _compiled.grouped_conv_preferred((1, 64, 7, 7), (512, 2, 3, 3), 32, **geom) == fast
    assert not _compiled.grouped_conv_preferred((1, 1024, 7, 7), (1024, 32, 3, 3), 32, **geom)   # ResNeXt s4
    assert not _compiled.grouped_conv_preferred((1, 64, 7, 7), (64, 1, 3, 3), 64, **geom)   # depthwise


def test_bad_shapes_raise():
    x = np.zeros((1, 8, 9, 9), F32)
    w = np.zeros((8, 2, 3, 3), F32)
    y = np.zeros((1, 8, 9, 9), F32)
    f = _compiled.grouped_conv_forward
    f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4)   # fits
    with pytest.raises(ValueError, match="divisible by group"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 3)
    with pytest.raises(ValueError, match="w has shape"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 2)                  # w wants 4 channels per group
    with pytest.raises(ValueError, match="y has shape"):
        f(x, w, None, np.zeros((1, 8, 7, 7), F32), (1, 1), (1, 1, 1, 1), 4)
    with pytest.raises(ValueError, match="y has shape"):
        f(x, w, None, y, (2, 2), (1, 1, 1, 1), 4)                  # stride 2 gives 5x5
    with pytest.raises(ValueError, match="bias has shape"):
        f(x, w, np.zeros(4, F32), y, (1, 1), (1, 1, 1, 1), 4)
    with pytest.raises(ValueError, match="residual has shape"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, residual=np.zeros((1, 8, 9, 8), F32))
    with pytest.raises(ValueError, match="residual must not be y"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, residual=y)
    with pytest.raises(ValueError, match="does not fit"):
        f(np.zeros((1, 8, 2, 2), F32), w, None, y, (1, 1), (0, 0, 0, 0), 4)
    with pytest.raises(ValueError, match="pads must be"):
        f(x, w, None, y, (1, 1), (1, 1), 4)
    with pytest.raises(ValueError, match="stride must be"):
        f(x, w, None, y, (0, 1), (1, 1, 1, 1), 4)
    with pytest.raises(ValueError, match="unknown activation"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, act=("mish", 0.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        f(x.astype(np.float64), w, None, y, (1, 1), (1, 1, 1, 1), 4)   # float32 only
    kind, packed = _compiled.grouped_conv_pack(w, 4)
    f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, packed=(kind, packed))
    with pytest.raises(ValueError, match="packed weights"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, packed=(kind, packed[:-1]))
    with pytest.raises(ValueError, match="packed weights"):
        f(x, w, None, y, (1, 1), (1, 1, 1, 1), 4, packed=(kind + 1, packed))   # another variant's form
    with pytest.raises(ValueError, match="divisible by group"):
        _compiled.grouped_conv_pack(w, 3)
