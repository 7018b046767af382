"""Convolution's backward: the input gradient of a stride-1 convolution runs as a forward
convolution of dy with the flipped, transposed filters (decaf/layers/conv.py), so the forward's
direct and Winograd kernels compute it. Checked against a float64 NumPy reference written here.

The reference: dx padded = the sum over the kernel taps (u, v) of the per-group contraction of dy
with w[:, :, u, v], placed at offset (u, v); then the pads are cut off. dW likewise, as the sum
over images and output pixels of dy times the shifted, padded input.

Tolerance: relative to the largest |value|, 5e-5 where the plan may pick Winograd (3x3 with 32 or
more channels a group; its float32 error is ~1e-5 on these sizes: tests/test_winograd.py measures
it), else 1e-5.
"""
import numpy as np
import pytest

import decaf
import decaf.kernels as kernels

pytestmark = pytest.mark.skipif(kernels._compiled is None, reason="compiled kernels not available")


def reference_grads(x, w, dy, stride, pads, group):
    """(dx, dw) of y = conv(x, w) (stride, pads (t, l, b, r), groups) for the output gradient dy, float64."""
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    k, cg, kh, kw = w.shape
    kg = k // group
    ho, wo = dy.shape[2:]
    for gi in range(group):
        ks, cs = slice(gi * kg, (gi + 1) * kg), slice(gi * cg, (gi + 1) * cg)
        for u in range(kh):
            for v in range(kw):
                rows = slice(u, u + stride * (ho - 1) + 1, stride)
                cols = slice(v, v + stride * (wo - 1) + 1, stride)
                dxp[:, cs, rows, cols] += np.einsum("bkij,kc->bcij", dy[:, ks], w[ks, :, u, v])
                dw[ks, :, u, v] += np.einsum("bkij,bcij->kc", dy[:, ks], xp[:, cs, rows, cols])
    h, wd = x.shape[2:]
    return dxp[:, :, pt:pt + h, pl:pl + wd], dw


def conv_net(c, k, kernel, pad, group, size, stride=1):
    spec = {"name": "g", "inputs": {"data": [c, size, size]}, "layers": [
        {"name": "c", "type": "Convolution", "bottom": "data", "top": "c", "num_output": k,
         "kernel_size": kernel, "pad": pad, "group": group, "stride": stride}]}
    return decaf.Net(spec, phase="train", seed=3, force_backward=True)


def run_backward(net, x, rng):
    y = net.forward(data=x, outputs=["c"])["c"]
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = net.backward({"c": dy})["data"]
    return dy, dx, net.params["c.weight"].diff.copy()


def rel_err(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


# (channels in, out, kernel, pad, group, size, batch): Winograd-sized 3x3s, a 5x5 with two groups
# (CaffeNet's conv2), asymmetric pads, a 1x1, tiny groups, a single image, pads beyond kernel - 1
CASES = [
    (64, 64, 3, 1, 1, 16, 4),        # 64 tiles: Winograd for dx and dW
    (96, 64, 5, 2, 2, 13, 2),
    (16, 24, 3, [0, 1, 2, 0], 1, 9, 3),
    (32, 48, 1, 0, 1, 8, 3),
    (8, 8, 3, 1, 4, 10, 2),
    (64, 128, 3, 1, 1, 14, 1),
    (6, 10, 3, 0, 1, 7, 2),
    (4, 6, 3, 3, 1, 6, 2),           # pad 3 > kernel - 1: the GEMM path
    (128, 128, 3, 1, 2, 13, 4),      # CaffeNet's conv4, smaller: Winograd group by group (64 tiles)
]


@pytest.mark.parametrize("c,k,kernel,pad,group,size,batch", CASES)
def test_input_and_weight_gradients_match_reference(rng, c, k, kernel, pad, group, size, batch):
    net = conv_net(c, k, kernel, pad, group, size)
    x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
    dy, dx, dw = run_backward(net, x, rng)
    layer = net.layers["c"]
    want_dx, want_dw = reference_grads(x, net.params["c.weight"].data, dy, 1, layer.pads, group)
    tol = 5e-5 if kernel == 3 and min(c, k) // group >= 32 else 1e-5
    assert rel_err(dx, want_dx) < tol
    assert rel_err(dw, want_dw) < tol


def test_stride_one_input_gradient_runs_the_forward_kernels(rng, monkeypatch):
    """The path is taken (the forward kernel is called during backward) where it applies, and not for
    a strided convolution, whose input gradient stays im2col + GEMM + col2im, nor where Winograd's
    plan has under 64 tiles (packing the transposed filters each call would not pay)."""
    calls = []
    real = kernels.conv_forward
    monkeypatch.setattr(kernels, "conv_forward", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    for c, size, batch, stride, expect in ((16, 12, 2, 1, True), (16, 12, 2, 2, False), (64, 16, 1, 1, False)):
        # (the last: Winograd's plan with 16 tiles, too few to pay for packing the filters per call)
        net = conv_net(c, 32 if c == 16 else 64, 3, 1, 1, size, stride)
        x = rng.standard_normal((batch, c, size, size)).astype(np.float32)
        y = net.forward(data=x, outputs=["c"])["c"]
        calls.clear()
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = net.backward({"c": dy})["data"]
        assert calls == ([dy.shape] if expect else [])
        layer = net.layers["c"]
        want_dx, _ = reference_grads(x, net.params["c.weight"].data, dy, stride, layer.pads, 1)
        assert rel_err(dx, want_dx) < 1e-5


def test_weight_changes_between_steps_are_seen(rng):
    """The transposed filters are derived afresh each backward: after an SGD-like write the input
    gradient follows the new weights."""
    net = conv_net(64, 64, 3, 1, 1, 16)
    x = rng.standard_normal((2, 64, 16, 16)).astype(np.float32)
    run_backward(net, x, rng)
    net.params["c.weight"].data[...] *= -0.5
    dy, dx, _ = run_backward(net, x, rng)
    layer = net.layers["c"]
    want_dx, _ = reference_grads(x, net.params["c.weight"].data, dy, 1, layer.pads, 1)
    assert rel_err(dx, want_dx) < 5e-5
