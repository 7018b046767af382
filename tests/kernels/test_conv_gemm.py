"""The fused convolution (csrc/conv.c) and decaf's threaded GEMM (csrc/gemm.c, decaf.blas).

compiled == reference for random geometries, groups, bias / no bias, ReLU, and thread counts
below, equal to and above the batch (both of conv.c's paths); the reference == PyTorch's
convolution and its autograd (an independent implementation). Tolerance: GEMM sums in another
order than NumPy's, so rtol = 1e-5 and atol = 1e-5 times the largest magnitude of the result.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import decaf.blas as blas
import decaf.kernels as kernels
from decaf.kernels import reference
from decaf.threads import using_threads

from test_kernels import random_geometry, torch  # noqa: F401  (torch: the fixture)

_compiled = kernels._compiled


# the direct convolution exists in the AVX2 and AVX-512 kernel variants (csrc/direct_conv.c); the
# generic one (DECAF_ISA=generic, or a CPU without AVX2) falls back to im2col + GEMM, and the tests
# below still compare its results
DIRECT = _compiled is not None and _compiled.isa_current() in ("avx2", "avx512")
needs_blas = pytest.mark.skipif(_compiled is None or not blas.have_own_blas(),
                                reason="compiled kernels or decaf's OpenBLAS not available")


def is_direct(*geometry):
    """Whether conv_forward's plan for this geometry (arguments as conv_work_size's) is the direct one."""
    return _compiled.conv_plan(*geometry)["direct"]


def close(actual, expected):
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def conv_case(seed):
    """A random geometry with groups, plus x, w, bias (or None) and dy."""
    g = random_geometry(seed)
    rng = np.random.default_rng(seed)
    group = int(rng.choice([1, 1, 2, 3]))
    C, K = g.C * group, int(rng.integers(1, 5)) * group
    B = int(rng.integers(1, 6))
    x = rng.standard_normal((B, C, g.H, g.W)).astype(np.float32)
    w = rng.standard_normal((K, C // group) + g.kernel).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if rng.random() < 0.7 else None
    dy = rng.standard_normal((B, K) + g.out_hw).astype(np.float32)
    params = (g.kernel, g.stride, g.pads, g.dilation)
    return x, w, bias, dy, params, group, g.out_hw


def work_for(x, w, group, params, out_hw, backward):
    size = _compiled.conv_work_size(x.shape, w.shape, group, *params, out_hw, backward)
    return np.full(max(size, 1), np.nan, np.float32)    # garbage: the kernel must not read it first


@needs_blas
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("seed", range(25))
def test_conv_forward_and_backward_match_reference(seed, threads):
    x, w, bias, dy, params, group, out_hw = conv_case(seed)
    relu, apart = seed % 3 != 2, seed % 3 == 1      # no ReLU, ReLU in place, ReLU into relu_out
    forward_matches_reference(x, w, bias, params, group, out_hw, relu, apart, threads)
    backward_matches_reference(x, w, dy, bias is not None, params, group, out_hw, threads, want_dx=seed % 4 != 1)


@needs_blas
def test_conv_thread_count_changes_only_the_summation_order():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 6, 17, 15)).astype(np.float32), rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    params, out_hw = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), (17, 15)
    ys = []
    for n in (1, 2, 4):
        with using_threads(n):
            y = np.empty((5, 8, 17, 15), np.float32)
            _compiled.conv_forward(x, w, None, y, work_for(x, w, 1, params, out_hw, False), *params, 1)
            ys.append(y)
    for y in ys[1:]:
        close(y, ys[0])


@needs_blas
def test_conv_refuses_small_work_and_bad_shapes():
    x, w = np.zeros((2, 4, 8, 8), np.float32), np.zeros((6, 2, 3, 3), np.float32)
    params = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    y = np.zeros((2, 6, 6, 6), np.float32)
    with pytest.raises(ValueError, match="work has 3 floats"):
        _compiled.conv_forward(x, w, None, y, np.zeros(3, np.float32), *params, 2)
    work = work_for(x, w, 2, params, (6, 6), True)
    with pytest.raises(ValueError, match="w has shape"):
        _compiled.conv_forward(x, w, None, y, work, *params, 1)       # group 1 needs w (6, 4, 3, 3)
    with pytest.raises(ValueError, match="bias has shape"):
        _compiled.conv_forward(x, w, np.zeros(5, np.float32), y, work, *params, 2)
    with pytest.raises(ValueError, match="dx has shape"):
        _compiled.conv_backward(x, w, y, np.zeros((2, 4, 8, 7), np.float32), np.zeros_like(w), None, work,
                                *params, 2)
    with pytest.raises(ValueError, match="float|dtype|Buffer"):
        _compiled.conv_forward(x.astype(np.float64), w, None, y, work, *params, 2)


@pytest.mark.parametrize("seed", range(8))
def test_reference_conv_matches_torch(torch, seed):
    F = torch.nn.functional
    x, w, bias, dy, params, group, out_hw = conv_case(seed)
    kernel, stride, pads, dilation = params
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    top, left, bottom, right = pads
    # one more output than the formula (an overhanging window) needs extra bottom/right zeros
    padded = F.pad(xt, (left, right + stride[1] * 2, top, bottom + stride[0] * 2))
    yt = F.conv2d(padded, wt, bt, stride=stride, dilation=dilation, groups=group)[:, :, :out_hw[0], :out_hw[1]]
    y = np.empty(dy.shape, np.float32)
    reference.conv_forward(x, w, bias, y, None, *params, group)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(dy))
    dx, dw = np.empty_like(x), np.empty_like(w)
    db = None if bias is None else np.empty_like(bias)
    reference.conv_backward(x, w, dy, dx, dw, db, None, *params, group)
    close(dx, xt.grad.numpy())
    close(dw, wt.grad.numpy())
    if bias is not None:
        close(db, bt.grad.numpy())


@needs_blas
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 2), (7, 300, 1), (1, 900, 700), (40, 64, 1100), (300, 33, 20),
                                   (10, 1000, 37), (23, 257, 50), (2, 4096, 13)])  # last 3: the skinny kernel
def test_gemm_matches_numpy_with_transposed_operands(m, k, n, threads):
    rng = np.random.default_rng(m * 1000 + n)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    with using_threads(threads):
        for aa in (a, np.asfortranarray(a), a.T.copy().T):
            for bb in (b, np.asfortranarray(b)):
                out = np.full((m, n), np.nan, np.float32)
                _compiled.gemm(aa, bb, out)
                close(out, expected)
        out = np.ones((m, n), np.float32)
        _compiled.gemm(a, b, out, 2.0, 0.5)
        close(out, 2 * expected + 0.5)


@needs_blas
def test_gemm_bad_operands():
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        _compiled.gemm(a, b, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous rows or columns"):
        _compiled.gemm(np.ones((6, 8), np.float32)[::2, ::2], b, np.empty((3, 5), np.float32))
    out = np.full((3, 5), np.nan, np.float32)
    _compiled.gemm(np.ones((3, 0), np.float32), np.ones((0, 5), np.float32), out)   # empty sum
    np.testing.assert_array_equal(out, 0)


def run_python(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


@needs_blas
def test_blas_kernel_choice_and_numpys_setting_untouched():
    code = "import os, decaf.blas as b; print(b.blas_info()); print(os.environ.get('OPENBLAS_CORETYPE'))"
    info, numpy_setting = run_python(code, OPENBLAS_CORETYPE="Haswell", DECAF_OPENBLAS_CORETYPE="Haswell").splitlines()
    assert "Haswell kernels" in info and numpy_setting == "Haswell"
    info, numpy_setting = run_python(code, OPENBLAS_CORETYPE="Sandybridge", DECAF_OPENBLAS_CORETYPE="Haswell").splitlines()
    assert "Haswell kernels" in info and numpy_setting == "Sandybridge"   # NumPy's own choice is left alone


def test_decaf_blas_numpy_falls_back_to_the_reference():
    code = ("import numpy as np, decaf, decaf.blas as b, decaf.kernels as k; print(b.have_own_blas());"
            "print(k._for_gemm(np.zeros(1, np.float32)).__name__); print(b.blas_info())")
    own, impl, info = run_python(code, DECAF_BLAS="numpy").splitlines()
    assert own == "False" and impl.endswith("reference") and "DECAF_BLAS=numpy" in info


@needs_blas
def test_blas_goes_back_to_one_thread_after_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    get = blas._lib.scipy_openblas_get_num_threads
    a = np.ones((64, 64), np.float32)
    with threadpoolctl.threadpool_limits(3):      # reaches every OpenBLAS in the process, decaf's too
        assert get() == 3
        out = np.empty_like(a)
        _compiled.gemm(a, a, out)                 # called from decaf's threads: must be 1 again
        assert get() == 1
        np.testing.assert_array_equal(out, 64)


@needs_blas
def test_conv_relu_keeps_nan():
    x = np.ones((2, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = np.nan
    w = np.ones((1, 1, 1, 1), np.float32)
    y = np.empty_like(x)
    _compiled.conv_forward(x, w, np.array([-5], np.float32), y, work_for(x, w, 1, ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
                           (3, 3), False), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True)
    assert np.isnan(y[0, 0, 1, 1]) and np.isnan(y).sum() == 1 and (y[~np.isnan(y)] == 0).all()


@needs_blas
@pytest.mark.parametrize("batch,threads", [(1, 2), (3, 2), (4, 1)])
@pytest.mark.parametrize("group", [1, 2])
def test_pointwise_conv_reads_x_directly_and_matches_reference(batch, threads, group):
    rng = np.random.default_rng(batch * 10 + group)
    x = rng.standard_normal((batch, 4, 3, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4 // group, 1, 1)).astype(np.float32)
    bias, dy = rng.standard_normal(6).astype(np.float32), rng.standard_normal((batch, 6, 3, 4)).astype(np.float32)
    params = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    plan = _compiled.conv_plan(x.shape, w.shape, group, *params, (3, 4), threads=threads)
    # (a 3x4 plane: below the 4x4 to 8x8 planes that the pointwise kernel takes in the AVX2 and
    # AVX-512 variants, so that every variant takes the GEMM path)
    # no im2col (2-channel groups run the grouped kernel where it is built, which pads its planes);
    # images that go one per GEMM are read in place, a block of several (planes this small, more
    # images than threads) is gathered side by side: C x (images x pixels) floats of scratch
    gathered = (4 + 6) * plan["block"] * 12 if plan["block"] > 1 else 0    # (x's and y's blocks)
    with using_threads(threads):
        work = _compiled.conv_work_size(x.shape, w.shape, group, *params, (3, 4), False)
    assert plan["grouped"] or work == plan["slots"] * gathered
    assert plan["grouped"] == (DIRECT and group > 1)
    assert plan["grouped"] or plan["block"] == (1 if batch <= threads else -(-batch // threads))
    forward_matches_reference(x, w, bias, params, group, (3, 4), False, False, threads)
    forward_matches_reference(x, w, bias, params, group, (3, 4), True, True, threads)
    backward_matches_reference(x, w, dy, True, params, group, (3, 4), threads)
    assert _compiled.conv_plan(x.shape, w.shape, group, *params, (3, 4), backward=True, threads=threads)["block"] == 1


@needs_blas
@pytest.mark.parametrize("batch,threads", [(5, 2), (16, 2), (7, 3)])
def test_pointwise_conv_on_small_planes_blocks_images(batch, threads):
    """9x9 planes: each thread's images go in blocks of up to ceil(256 / 81) = 4 through one GEMM
    (x gathered side by side, y scattered back with the bias and the ReLU); 14x14: one per GEMM.
    (7x7 and 8x8 planes go to the pointwise kernel in the AVX2 and AVX-512 variants.)"""
    rng = np.random.default_rng(batch)
    params = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    for size, most in ((9, 4), (14, 1)):
        x = rng.standard_normal((batch, 24, size, size)).astype(np.float32)
        w = rng.standard_normal((40, 24, 1, 1)).astype(np.float32)
        bias = rng.standard_normal(40).astype(np.float32)
        plan = _compiled.conv_plan(x.shape, w.shape, 1, *params, (size, size), threads=threads)
        assert plan["by_image"] and plan["block"] == min(most, -(-batch // threads))
        forward_matches_reference(x, w, bias, params, 1, (size, size), False, False, threads)
        forward_matches_reference(x, w, bias, params, 1, (size, size), True, True, threads)


@needs_blas
@pytest.mark.parametrize("batch,threads", [(1, 2), (3, 2), (4, 1)])
def test_conv_on_wide_images_matches_reference(batch, threads):
    # CaffeNet conv2's geometry (27x27, 5x5, pad 2, 2 groups), scaled down in channels
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 6, 27, 27)).astype(np.float32)
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    bias, dy = rng.standard_normal(8).astype(np.float32), rng.standard_normal((batch, 8, 27, 27)).astype(np.float32)
    params = ((5, 5), (1, 1), (2, 2, 2, 2), (1, 1))
    forward_matches_reference(x, w, bias, params, 2, (27, 27), True, False, threads)
    backward_matches_reference(x, w, dy, True, params, 2, (27, 27), threads)


@needs_blas
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("k,stride,pad,group", [(3, 1, 1, 1), (3, 1, 1, 3), (1, 1, 0, 1), (11, 4, 0, 1)])
def test_one_large_image_split_by_output_rows(k, stride, pad, group, threads):
    # batch 1 < threads with >= 1024 output pixels: each thread a band of output rows
    rng = np.random.default_rng(k * 10 + group)
    H = 40 if stride == 1 else 139
    x = rng.standard_normal((1, 3 * group, H, H)).astype(np.float32)
    w = rng.standard_normal((4 * group, 3, k, k)).astype(np.float32)
    Ho = (H + 2 * pad - k) // stride + 1
    assert Ho * Ho >= 1024
    bias = rng.standard_normal(4 * group).astype(np.float32)
    params = ((k, k), (stride, stride), (pad, pad, pad, pad), (1, 1))
    with using_threads(threads):
        y, r = np.full((1, 4 * group, Ho, Ho), np.nan, np.float32), np.full((1, 4 * group, Ho, Ho), np.nan, np.float32)
        _compiled.conv_forward(x, w, bias, y, work_for(x, w, group, params, (Ho, Ho), False), *params, group, True, r)
        y_ref, r_ref = np.empty_like(y), np.empty_like(r)
        reference.conv_forward(x, w, bias, y_ref, None, *params, group, True, r_ref)
        close(y, y_ref)
        close(r, r_ref)


def backward_matches_reference(x, w, dy, with_bias, params, group, out_hw, threads, want_dx=True):
    """conv_backward with `threads` threads == the NumPy reference: dx (unless not wanted), dw and
    (with_bias) db."""
    with using_threads(threads):
        dx = np.full_like(x, np.nan) if want_dx else None
        dw = np.full_like(w, np.nan)
        db = np.full(w.shape[0], np.nan, np.float32) if with_bias else None
        _compiled.conv_backward(x, w, dy, dx, dw, db, work_for(x, w, group, params, out_hw, True), *params, group)
        dx_ref, dw_ref = (np.empty_like(x) if want_dx else None), np.empty_like(w)
        db_ref = np.empty(w.shape[0], np.float32) if with_bias else None
        reference.conv_backward(x, w, dy, dx_ref, dw_ref, db_ref, None, *params, group)
        if want_dx:
            close(dx, dx_ref)
        close(dw, dw_ref)
        if with_bias:
            close(db, db_ref)


def forward_matches_reference(x, w, bias, params, group, out_hw, relu, apart, threads):
    """conv_forward with `threads` threads == the NumPy reference (ReLU in place, or into its
    own array when apart)."""
    shape = (x.shape[0], w.shape[0]) + tuple(out_hw)
    with using_threads(threads):
        y = np.full(shape, np.nan, np.float32)
        r = np.full_like(y, np.nan) if apart else None
        _compiled.conv_forward(x, w, bias, y, work_for(x, w, group, params, out_hw, False), *params, group, relu, r)
        y_ref, r_ref = np.empty_like(y), (np.empty_like(y) if apart else None)
        reference.conv_forward(x, w, bias, y_ref, None, *params, group, relu, r_ref)
        close(y, y_ref)
        if apart:
            close(r, r_ref)
            assert (r >= 0).all() and (r[y < 0] == 0).all()


@needs_blas
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_direct_convolution_matches_reference(seed, threads):
    # stride 1, 16k input and 32k output channels per group: the im2col-free kernel (csrc/direct_conv.c)
    rng = np.random.default_rng(seed)
    group = int(rng.choice([1, 2]))
    C, K = 16 * int(rng.integers(1, 3)) * group, 32 * int(rng.integers(1, 3)) * group
    B, H, W = int(rng.integers(1, 5)), int(rng.integers(1, 20)), int(rng.integers(1, 33))
    kh, kw = int(rng.choice([1, 3, 5])), int(rng.choice([1, 3]))
    if (C // group) * kh * kw < 64:
        kh, kw = 3, 3    # 1x1 and other small windows are GEMMs, not direct (tested below)
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    Ho, Wo = H + pads[0] + pads[2] - kh + 1, W + pads[1] + pads[3] - kw + 1
    if Ho < 1 or Wo < 1:
        pads, Ho, Wo = (kh, kw, kh, kw), H + kh + 1, W + kw + 1
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C // group, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if seed % 3 else None
    relu, apart = seed % 2 == 0, seed % 4 == 0
    params = ((kh, kw), (1, 1), pads, (1, 1))
    assert is_direct(x.shape, w.shape, group, *params, (Ho, Wo)) == DIRECT
    assert not is_direct(x.shape, w.shape, group, (kh, kw), (1, 1), pads, (2, 2), (Ho, Wo))
    assert not is_direct((B, C, 5, 5), (K, C // group, 1, 1), group, (1, 1), (1, 1),
                                                (0, 0, 0, 0), (1, 1), (5, 5))
    assert not is_direct((B, 3, 9, 9), (K, 3, 3, 3), 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1),
                                                (5, 5))        # 27 multiply-adds per output
    forward_matches_reference(x, w, bias, params, group, (Ho, Wo), relu, apart, threads)


@needs_blas
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_direct_convolution_plain_layout_matches_reference(seed, threads):
    # any stride and channel count (CaffeNet's conv1: 3 channels, 11x11, stride 4), 32k outputs per group
    rng = np.random.default_rng(100 + seed)
    group = int(rng.choice([1, 2]))
    Cg, K = int(rng.integers(1, 21)), 32 * int(rng.integers(1, 3)) * group
    kh, kw = int(rng.integers(1, 8)), int(rng.integers(2, 8))
    Cg = max(Cg, -(-64 // (kh * kw)))     # at least 64 multiply-adds per output (else im2col + GEMM)
    sh, sw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    B, H, W = int(rng.integers(1, 5)), int(rng.integers(kh, 30)), int(rng.integers(kw, 45))
    Ho = (H + pads[0] + pads[2] - kh) // sh + 1
    Wo = (W + pads[1] + pads[3] - kw) // sw + 1
    x = rng.standard_normal((B, Cg * group, H, W)).astype(np.float32)
    w = rng.standard_normal((K, Cg, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if seed % 3 else None
    relu, apart = seed % 2 == 0, seed % 4 == 0
    params = ((kh, kw), (sh, sw), pads, (1, 1))
    plan = _compiled.conv_plan(x.shape, w.shape, group, *params, (Ho, Wo))
    assert (plan["direct"] or plan["grouped"]) == DIRECT    # (groups of <= 8 channels: the grouped kernel)
    forward_matches_reference(x, w, bias, params, group, (Ho, Wo), relu, apart, threads)


@needs_blas
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seed", range(8))
def test_direct_convolution_strided_and_small_outputs_match_reference(seed, threads):
    # 16k input channels at strides 1-3 and outputs from 1x1 to 9x13: tiles that run on into the next
    # output row (the AVX2 kernel counts pixels row after row), ResNet's stride-2 3x3 convolutions
    rng = np.random.default_rng(300 + seed)
    C, K = 16 * int(rng.integers(1, 4)), 32 * int(rng.integers(1, 3))
    s = int(rng.integers(1, 4))
    kh = kw = int(rng.choice([2, 3, 5]))
    pads = tuple(int(v) for v in rng.integers(0, 2, 4))
    B, H, W = int(rng.integers(1, 4)), int(rng.integers(kh, 2 + 9 * s)), int(rng.integers(kw, 2 + 13 * s))
    Ho, Wo = (H + pads[0] + pads[2] - kh) // s + 1, (W + pads[1] + pads[3] - kw) // s + 1
    x = rng.standard_normal((B, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32) if seed % 2 else None
    params = ((kh, kw), (s, s), pads, (1, 1))
    assert is_direct(x.shape, w.shape, 1, *params, (Ho, Wo)) == DIRECT
    relu = seed % 3 == 0
    forward_matches_reference(x, w, bias, params, 1, (Ho, Wo), relu, relu and seed % 2 == 0, threads)


@needs_blas
@pytest.mark.parametrize("threads", [1, 2])
def test_prepacked_weights_give_the_same_output_and_a_stale_form_is_refused(threads):
    # conv_pack once, then conv_forward(packed=...) reads them instead of packing w again: the same
    # bits as the unpacked call (the kernel is the same), for the direct plan; a plan that packs
    # nothing reports kind 0
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 64, 7, 7)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    geometry = (1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (7, 7))
    with using_threads(threads):
        kind, size = kernels.conv_packing(x, w, *geometry)
        work = np.empty(max(kernels.conv_work_size(x, w, *geometry[:5], geometry[5]), 1), np.float32)
        y0 = np.empty((1, 64, 7, 7), np.float32)
        kernels.conv_forward(x, w, None, y0, work, *geometry[1:5], 1)
        if not DIRECT:
            assert kind == 0
            return
        assert kind > 0 and size == w.size
        packed = np.empty(size, np.float32)
        kernels.conv_pack(x, w, packed, *geometry)
        y1 = np.full_like(y0, np.nan)
        kernels.conv_forward(x, w, None, y1, work, *geometry[1:5], 1, packed=(kind, packed))
        assert np.array_equal(y0, y1)
        with pytest.raises(ValueError, match="do not fit"):
            kernels.conv_forward(x, w, None, y1, work, *geometry[1:5], 1, packed=(kind + 1, packed))
        with pytest.raises(ValueError, match="do not fit"):
            kernels.conv_forward(x, w, None, y1, work, *geometry[1:5], 1, packed=(kind, packed[:-1]))
        one_by_one = (1, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), (4, 4))   # (1x1 stride 2: im2col + GEMM)
        assert kernels.conv_packing(x, w[:, :, :1, :1], *one_by_one) == (0, 0)
        with pytest.raises(ValueError, match="unpacked"):
            kernels.conv_pack(x, w[:, :, :1, :1].copy(), packed, *one_by_one)


@needs_blas
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(4))
def test_prepacked_plan_takes_winograd_where_preferred_and_matches_reference(case, threads):
    # a forward given prepacked weights may run Winograd F(4x4, 3x3) (csrc/winograd.c) where it measured
    # faster: 3x3 stride 1, C K / (C + K) >= 32, >= 16 tiles. Against the float64-checked reference at
    # Winograd's tolerance (tests/test_winograd.py measures ~1e-5 of the largest output), with bias,
    # residual and the activation into its own array; a plan without prepacked weights never takes it.
    rng = np.random.default_rng(500 + case)
    C, K, H = [(64, 64, 20), (96, 64, 13), (64, 32, 20), (64, 64, 5)][case]
    B = 1 + case % 2
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) * (2.0 / (9 * C)) ** 0.5).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    residual = rng.standard_normal((B, K, H, H)).astype(np.float32)
    geometry = (1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (H, H))
    with using_threads(threads):
        plan = _compiled.conv_plan(x.shape, w.shape, *geometry, prepacked=True)
        wanted = case < 2 and _compiled.isa_current() != "generic"
        if _compiled.isa_current() != "generic":
            assert plan["winograd"] == wanted, plan      # case 2: C K / (C + K) < 32; case 3: 4 tiles
        assert not _compiled.conv_plan(x.shape, w.shape, *geometry)["winograd"]
        kind, size = kernels.conv_packing(x, w, *geometry)
        if not kind:
            return
        packed = np.empty(size, np.float32)
        kernels.conv_pack(x, w, packed, *geometry)
        work = np.empty(max(kernels.conv_work_size(x, w, *geometry[:5], geometry[5], False, True), 1), np.float32)
        y, out = np.full((B, K, H, H), np.nan, np.float32), np.full((B, K, H, H), np.nan, np.float32)
        kernels.conv_forward(x, w, bias, y, work, *geometry[1:5], 1, act=("clamp", 0.0, np.inf, 0.0),
                             relu_out=out, residual=residual, packed=(kind, packed))
        want = np.empty_like(y)
        reference.conv_forward(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64), want, None,
                               *geometry[1:5], 1, residual=residual.astype(np.float64))
        scale = np.abs(want).max()
        assert np.abs(y - want).max() <= 5e-5 * scale
        assert np.abs(out - np.maximum(want, 0)).max() <= 5e-5 * scale


@needs_blas
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("prepacked", [False, True])
def test_conv_forward_takes_the_grouped_kernel_for_narrow_groups(prepacked, threads):
    # groups of <= 8 channels (RegNet, ResNeXt's first stages) run csrc/grouped_conv.c through
    # conv_forward, with or without weights packed once; wider groups keep im2col + GEMM
    rng = np.random.default_rng(11)
    B, C, K, G, H = 2, 48, 48, 6, 11
    x = rng.standard_normal((B, C, H, H)).astype(np.float32)
    w = rng.standard_normal((K, C // G, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    params = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    Ho = (H + 2 - 3) // 2 + 1
    with using_threads(threads):
        plan = _compiled.conv_plan(x.shape, w.shape, G, *params, (Ho, Ho), prepacked=prepacked)
        assert plan["grouped"] == DIRECT, plan           # (the AVX variants run it)
        wide = _compiled.conv_plan((B, 64, H, H), (64, 32, 3, 3), 2, *params, (Ho, Ho))
        assert not wide["grouped"]
        packed = None
        kind, size = kernels.conv_packing(x, w, G, *params, (Ho, Ho))
        if prepacked and kind:
            array = np.empty(size, np.float32)
            kernels.conv_pack(x, w, array, G, *params, (Ho, Ho))
            packed = (kind, array)
        work = np.empty(max(kernels.conv_work_size(x, w, G, *params, (Ho, Ho), False, packed is not None), 1),
                        np.float32)
        y, out = np.full((B, K, Ho, Ho), np.nan, np.float32), np.full((B, K, Ho, Ho), np.nan, np.float32)
        kernels.conv_forward(x, w, bias, y, work, *params, G, relu=True, relu_out=out, packed=packed)
        want, want_out = np.empty_like(y), np.empty_like(y)
        reference.conv_forward(x, w, bias, want, None, *params, G, True, want_out)
        close(y, want)
        close(out, want_out)
