"""BatchNorm with batch statistics (the train phase): the kernels of csrc/batchnorm.c and their
NumPy twins (decaf.kernels.reference) against float64 formulas written here (and PyTorch's autograd
when installed), and the layer (decaf/layers/norm.py) using them: outputs, running statistics,
gradients, propagate_down off, (N, C) inputs, a fused ReLU, and the float64 gradient check.

Tolerances (float32 kernels against float64 formulas, data with |mean| up to 50 std):
    mean: 1e-6 of max |x| (the float rounding of a mean accumulated in double)
    var: 2e-6 relative
    y: 1e-5 of max |y| (x - mean rounds once at the size of x, then a multiply and an add)
    dgamma, dbeta: 1e-5 of their largest value; dx: 1e-5 of max |gamma dy / std| (the terms it
    is summed from, which cancel)
The float64 reference (numpy backend) against the same formulas: 1e-10.
"""
import numpy as np
import pytest

import decaf
from decaf import Net, cpu
from decaf.gradcheck import check_layer
from decaf.kernels import reference, using_backend

_compiled = pytest.importorskip("decaf.kernels._compiled")

EPS = 1e-5
RELU = ("clamp", 0.0, float("inf"), 0.0)
# C not a multiple of 8, HW 1 ((N, C) inputs, over a block of 256 channels in the last), N 1, a 1x1
# image of one image (m 1, var 0), and three large enough for two threads (128k values)
SHAPES = [(2, 5, 3, 7), (3, 11, 1, 1), (1, 7, 9, 9), (1, 3, 1, 1), (4, 19, 17, 13), (8, 64, 28, 28),
          (16, 3, 40, 40), (300, 517, 1, 1)]
IMPLS = [pytest.param(_compiled, id="compiled"), pytest.param(reference, id="numpy")]


@pytest.fixture(params=[1, 2])
def threads(request):
    before = _compiled.get_num_threads()
    _compiled.set_num_threads(request.param)
    yield request.param
    _compiled.set_num_threads(before)


def channel(v):
    return v.reshape(1, -1, 1, 1)


def data(rng, shape, offset=50.0):
    """x with per-channel means up to `offset` times its spread (a shifted one-pass variance would
    cancel here), gamma, beta, dy."""
    c = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0, (1, c, 1, 1)) + rng.uniform(-offset, offset, (1, c, 1, 1))
    gamma, beta = rng.uniform(-2, 2, c), rng.standard_normal(c)
    dy = rng.standard_normal(shape)
    return [a.astype(np.float32) for a in (x, gamma, beta, dy)]


def formulas(x, gamma, beta, dy):
    """The float64 forward and backward, from the definitions (gamma, beta None: 1, 0)."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    g = np.ones(x.shape[1]) if gamma is None else gamma.astype(np.float64)
    b = np.zeros(x.shape[1]) if beta is None else beta.astype(np.float64)
    m = x.size // x.shape[1]
    mean = x.sum(axis=(0, 2, 3)) / m
    var = ((x - channel(mean)) ** 2).sum(axis=(0, 2, 3)) / m
    inv_std = 1 / np.sqrt(var + EPS)
    xhat = (x - channel(mean)) * channel(inv_std)
    y = xhat * channel(g) + channel(b)
    dbeta, dgamma = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
    dxhat = dy * channel(g)
    dx = (dxhat - dxhat.mean(axis=(0, 2, 3), keepdims=True)
          - xhat * (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)) * channel(inv_std)
    return {"mean": mean, "var": var, "y": y, "dgamma": dgamma, "dbeta": dbeta, "dx": dx,
            "dx_terms": np.abs(dxhat * channel(inv_std)).max()}


def near(actual, expected, scale, rel):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * max(float(scale), 1e-30))


def run_forward(impl, x, gamma, beta, act=None, act_out=None):
    c = x.shape[1]
    y, mean, var = np.full_like(x, np.nan), np.full(c, np.nan, x.dtype), np.full(c, np.nan, x.dtype)
    impl.batchnorm_train_forward(x, gamma, beta, y, mean, var, EPS, act, act_out)
    return y, mean, var


# ---- the kernels -------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_forward_matches_float64(impl, affine, threads, rng):
    for shape in SHAPES:
        x, gamma, beta, dy = data(rng, shape)
        if not affine:
            gamma = beta = None
        ref = formulas(x, gamma, beta, dy)
        y, mean, var = run_forward(impl, x, gamma, beta)
        near(mean, ref["mean"], np.abs(x).max(), 1e-6)
        np.testing.assert_allclose(var, ref["var"], rtol=2e-6, atol=1e-30)
        near(y, ref["y"], np.abs(ref["y"]).max(), 1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_backward_matches_float64(impl, affine, threads, rng):
    for shape in SHAPES:
        x, gamma, beta, dy = data(rng, shape)
        if not affine:
            gamma = beta = None
        ref = formulas(x, gamma, beta, dy)
        _, mean, var = run_forward(impl, x, gamma, beta)
        c = shape[1]
        dx, dgamma, dbeta = np.full_like(x, np.nan), np.full(c, np.nan, np.float32), np.full(c, np.nan, np.float32)
        impl.batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, EPS)
        near(dx, ref["dx"], ref["dx_terms"], 1e-5)
        near(dgamma, ref["dgamma"], np.abs(ref["dgamma"]).max(), 1e-5)
        near(dbeta, ref["dbeta"], np.abs(ref["dbeta"]).max(), 1e-5)
        # propagate_down off: no dx; only the parameters' gradients
        dg2, db2 = np.full(c, np.nan, np.float32), np.full(c, np.nan, np.float32)
        impl.batchnorm_train_backward(x, dy, mean, var, gamma, None, dg2, db2, EPS)
        np.testing.assert_array_equal(dg2, dgamma)
        np.testing.assert_array_equal(db2, dbeta)
        # no affine parameters: dx alone
        dx2 = np.full_like(x, np.nan)
        impl.batchnorm_train_backward(x, dy, mean, var, gamma, dx2, None, None, EPS)
        np.testing.assert_array_equal(dx2, dx)


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_activation(impl, rng):
    """The activation in y, or into act_out with y keeping the normalised values."""
    x, gamma, beta, dy = data(rng, (3, 10, 6, 5))
    ref = formulas(x, gamma, beta, dy)
    y, _, _ = run_forward(impl, x, gamma, beta, RELU)
    near(y, np.maximum(ref["y"], 0), np.abs(ref["y"]).max(), 1e-5)
    y, _, _ = run_forward(impl, x, gamma, beta, ("clamp", -0.5, 0.75, 0.0))
    near(y, np.clip(ref["y"], -0.5, 0.75), np.abs(ref["y"]).max(), 1e-5)
    x2, g2, b2, dy2 = data(rng, (7, 300, 1, 1))      # (N, C): the epilogue over runs of channels
    ref2 = formulas(x2, g2, b2, dy2)
    y, _, _ = run_forward(impl, x2, g2, b2, RELU)
    near(y, np.maximum(ref2["y"], 0), np.abs(ref2["y"]).max(), 1e-5)
    out = np.full_like(x, np.nan)
    y, _, _ = run_forward(impl, x, gamma, beta, ("silu", 0.0, float("inf"), 1.0), out)
    near(y, ref["y"], np.abs(ref["y"]).max(), 1e-5)
    near(out, ref["y"] / (1 + np.exp(-ref["y"])), np.abs(ref["y"]).max(), 1e-5)


def test_float64_reference_is_exact(rng):
    """The numpy kernels in float64 (what the gradient check runs) equal the formulas."""
    x, gamma, beta, dy = (a.astype(np.float64) for a in data(rng, (3, 6, 4, 5)))
    ref = formulas(x, gamma, beta, dy)
    y, mean, var = run_forward(reference, x, gamma, beta)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(6), np.empty(6)
    reference.batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, EPS)
    for name, value in (("mean", mean), ("var", var), ("y", y), ("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)):
        np.testing.assert_allclose(value, ref[name], rtol=1e-10, atol=1e-10, err_msg=name)


def test_matches_torch_autograd(rng):
    """An independent reference: torch's batch_norm in training mode, differentiated by autograd in float64."""
    torch = pytest.importorskip("torch")
    x, gamma, beta, dy = data(rng, (4, 9, 7, 6))
    t = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, gamma, beta)]
    yt = torch.nn.functional.batch_norm(t[0], None, None, t[1], t[2], training=True, eps=EPS)
    yt.backward(torch.tensor(dy.astype(np.float64)))
    y, mean, var = run_forward(_compiled, x, gamma, beta)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(9, np.float32), np.empty(9, np.float32)
    _compiled.batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, EPS)
    expected = [v.detach().numpy() for v in (yt, t[0].grad, t[1].grad, t[2].grad)]
    for name, value, want in zip(("y", "dx", "dgamma", "dbeta"), (y, dx, dgamma, dbeta), expected):
        near(value, want, np.abs(want).max(), 2e-5)


def test_threads_and_variants_agree(rng):
    x, gamma, beta, dy = data(rng, (8, 24, 20, 20))
    before, isa = _compiled.get_num_threads(), cpu.get_isa()
    results = []
    try:
        for name in cpu.supported_isas():
            cpu.set_isa(name)
            for n in (1, 2):
                _compiled.set_num_threads(n)
                y, mean, var = run_forward(_compiled, x, gamma, beta)
                dx, dgamma, dbeta = np.empty_like(x), np.empty(24, np.float32), np.empty(24, np.float32)
                _compiled.batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, EPS)
                results.append((f"{name}, {n} threads", [y, mean, var, dx, dgamma, dbeta]))
    finally:
        _compiled.set_num_threads(before)
        cpu.set_isa(isa)
    for label, arrays in results[1:]:
        for a, b in zip(arrays, results[0][1]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max(), err_msg=label)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments_are_refused(impl, rng):
    x, gamma, beta, dy = data(rng, (2, 3, 4, 5))
    y, m, v = np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32)
    fwd = [((x, gamma[:2], beta, y, m, v, EPS), "gamma"),
           ((x, gamma, np.zeros(4, np.float32), y, m, v, EPS), "beta"),
           ((x, gamma, beta, np.empty((2, 3, 4, 6), np.float32), m, v, EPS), "y"),
           ((x, gamma, beta, y, m[:2], v, EPS), "mean"),
           ((x, gamma, beta, y, m, np.empty(3), EPS), "var|dtype"),
           ((x, gamma, beta, y, m, v, EPS, None, np.empty_like(x)), "act_out without act"),
           ((x.reshape(2, 3, 20), gamma, beta, y.reshape(2, 3, 20), m, v, EPS), "dimensions|4-D"),
           ((x[:, :, :, ::2], gamma, beta, np.empty((2, 3, 4, 3), np.float32), m, v, EPS), "contiguous")]
    for args, words in fwd:
        with pytest.raises(ValueError, match=words):
            impl.batchnorm_train_forward(*args)
    dx, dg, db = np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32)
    bwd = [((x, dy[:1], m, v, gamma, dx, dg, db, EPS), "dy"),
           ((x, dy, m, v[:1], gamma, dx, dg, db, EPS), "var"),
           ((x, dy, m, v, gamma, np.empty((2, 2, 4, 5), np.float32), dg, db, EPS), "dx"),
           ((x, dy, m, v, gamma, dx, dg[:2], db, EPS), "dgamma"),
           ((x, dy, m, v, gamma, dx, dg, np.empty(4, np.float32), EPS), "dbeta")]
    for args, words in bwd:
        with pytest.raises(ValueError, match=words):
            impl.batchnorm_train_backward(*args)


def test_overlaps_and_bad_eps_are_refused(rng):
    """The C loops read x while they write y (or dx): no aliasing, not even y = x."""
    x, gamma, beta, dy = data(rng, (2, 3, 4, 5))
    m, v = np.empty(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.batchnorm_train_forward(x, gamma, beta, x, m, v, EPS)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.batchnorm_train_forward(x, gamma, beta, np.empty_like(x), m, v, EPS, RELU, x)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.batchnorm_train_backward(x, dy, m, v, gamma, dy, None, None, EPS)
    with pytest.raises(ValueError, match="eps"):
        _compiled.batchnorm_train_forward(x, gamma, beta, np.empty_like(x), m, v, -1.0)


def test_empty_batch_gives_nan_statistics():
    """No values: mean and var NaN (as NumPy's), nothing written, no crash."""
    x = np.zeros((0, 3, 4, 4), np.float32)
    y, mean, var = run_forward(_compiled, x, None, None)
    assert np.isnan(mean).all() and np.isnan(var).all()
    _compiled.batchnorm_train_backward(x, x.copy(), mean, var, None, np.empty_like(x), None, None, EPS)


# ---- the layer ---------------------------------------------------------------------------------

def bn_net(shape, affine=True, relu=None, momentum=0.9):
    """data -> BatchNorm "bn" (-> ReLU into "bn" itself, relu="in place", or into "relu", relu="own top")."""
    layers = [{"name": "bn", "type": "BatchNorm", "bottom": "data", "top": "bn", "affine": affine,
               "momentum": momentum}]
    if relu:
        layers.append({"name": "relu", "type": "ReLU", "bottom": "bn", "top": "bn" if relu == "in place" else "relu"})
    return {"name": "bn", "inputs": {"data": list(shape[1:])}, "layers": layers}


def set_params(net, rng, c):
    net.params["bn.mean"].data[...] = rng.standard_normal(c)
    net.params["bn.var"].data[...] = rng.uniform(0.5, 2.0, c)
    if "bn.weight" in net.params:
        net.params["bn.weight"].data[...] = rng.uniform(-2, 2, c)
        net.params["bn.bias"].data[...] = rng.standard_normal(c)


@pytest.mark.parametrize("shape", [(6, 13, 5, 3), (5, 10), (1, 9, 4, 4)], ids=["nchw", "nc", "n1"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_layer_train_forward_backward(shape, affine, rng):
    net = Net(bn_net(shape, affine), phase="train", force_backward=True)
    c = shape[1]
    set_params(net, rng, c)
    p0 = {k: v.astype(np.float64) for k, v in net.param_arrays().items()}
    x4 = [a for a in data(rng, shape + (1,) * (4 - len(shape)))]
    x, dy = x4[0].reshape(shape), x4[3].reshape(shape)
    gamma = p0["bn.weight"].astype(np.float32) if affine else None
    ref = formulas(x4[0], gamma, p0["bn.bias"].astype(np.float32) if affine else None, x4[3])
    y = net.forward(data=x)["bn"]
    near(y, ref["y"].reshape(shape), np.abs(ref["y"]).max(), 1e-5)
    # the running statistics move as before: r = momentum r + (1 - momentum) batch (unbiased variance)
    m = x.size // c
    np.testing.assert_allclose(net.params["bn.mean"].data, 0.9 * p0["bn.mean"] + 0.1 * ref["mean"],
                               rtol=1e-6, atol=1e-6 * np.abs(x).max())
    np.testing.assert_allclose(net.params["bn.var"].data,
                               0.9 * p0["bn.var"] + 0.1 * ref["var"] * m / max(m - 1, 1), rtol=2e-6)
    grads = net.backward(diffs={"bn": dy})
    near(grads["data"], ref["dx"].reshape(shape), ref["dx_terms"], 1e-5)
    if affine:
        near(net.params["bn.weight"].diff, ref["dgamma"], np.abs(ref["dgamma"]).max(), 1e-5)
        near(net.params["bn.bias"].diff, ref["dbeta"], np.abs(ref["dbeta"]).max(), 1e-5)


def test_layer_equals_numpy_backend(rng):
    """The compiled layer against the same layer on the NumPy kernels (float32 both): outputs,
    running statistics and gradients."""
    shape = (4, 12, 9, 7)
    x, _, _, dy = data(rng, shape)
    results = []
    for backend in ("compiled", "numpy"):
        with using_backend(backend):
            net = Net(bn_net(shape), phase="train", force_backward=True, seed=3)
            set_params(net, np.random.default_rng(5), shape[1])
            y = net.forward(data=x)["bn"]
            g = net.backward(diffs={"bn": dy})["data"]
            results.append([y, g] + [p.data.copy() for p in net.params.values()]
                           + [p.diff.copy() for p in net.params.values() if p.learnable])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5 * max(np.abs(b).max(), 1))


def test_layer_propagate_down_off(rng):
    """The input needs no gradient: the parameters get theirs, the input's diff is not written."""
    shape = (3, 5, 4, 4)
    net = Net(bn_net(shape), phase="train")
    set_params(net, rng, 5)
    x, _, _, dy = data(rng, shape)
    net.forward(data=x)
    net.blobs["data"].diff[...] = np.nan
    net.backward(diffs={"bn": dy})
    assert np.isnan(net.blobs["data"].diff).all()
    ref = formulas(x, net.params["bn.weight"].data, net.params["bn.bias"].data, dy)
    near(net.params["bn.weight"].diff, ref["dgamma"], np.abs(ref["dgamma"]).max(), 1e-5)
    near(net.params["bn.bias"].diff, ref["dbeta"], np.abs(ref["dbeta"]).max(), 1e-5)


@pytest.mark.parametrize("relu", ["in place", "own top"])
def test_layer_with_fused_relu_in_train(relu, rng):
    """BatchNorm -> ReLU in the train phase: the kernel applies the ReLU as it writes (in y, or into
    the ReLU's top with the BatchNorm's top keeping the values before it); backward through both."""
    shape = (4, 6, 5, 5)
    net = Net(bn_net(shape, relu=relu), phase="train", force_backward=True)
    set_params(net, rng, 6)
    assert net.layers["relu"].fused
    x, _, _, dy = data(rng, shape)
    gamma, beta = net.params["bn.weight"].data.copy(), net.params["bn.bias"].data.copy()
    ref = formulas(x, gamma, beta, dy)
    top = "bn" if relu == "in place" else "relu"
    out = net.forward(data=x, outputs=sorted({"bn", top}))
    near(out[top], np.maximum(ref["y"], 0), np.abs(ref["y"]).max(), 1e-5)
    if top != "bn":
        near(out["bn"], ref["y"], np.abs(ref["y"]).max(), 1e-5)
    grads = net.backward(diffs={top: dy})
    masked = formulas(x, gamma, beta, np.where(ref["y"] > 0, dy, 0).astype(np.float32))
    near(grads["data"], masked["dx"], masked["dx_terms"], 1e-5)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shapes", [[(3, 5, 1, 3)], [(4, 3)], [(1, 2, 3, 2)]], ids=["odd", "nc", "n1"])
def test_layer_gradient_check(affine, shapes):
    """Finite differences in float64 (decaf.gradcheck: the numpy kernels)."""
    report = check_layer({"name": "bn", "type": "BatchNorm", "affine": affine}, shapes, phase="train")
    assert report.passed, str(report)


def test_decaf_package_exports_the_kernels():
    assert callable(decaf.kernels.batchnorm_train_forward) and callable(decaf.kernels.batchnorm_train_backward)
