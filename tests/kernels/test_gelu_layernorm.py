"""kernels.gelu and kernels.layernorm (csrc/elementwise.c, csrc/layernorm.c) against float64
references, in every instruction set variant this CPU runs; their NumPy twins; bad arguments; and
the GELU and LayerNorm layers that call them: forward against float64 formulas, backward of the
float32 net (whose LayerNorm kept only mean and inv_std) against the float64 net's (NumPy path).

Tolerances: GELU within 3e-7 max(1, |x|) absolute of x (1 + erf(x / sqrt 2)) / 2 in float64
(SciPy's erf). LayerNorm: y within 2e-6 max|y| (float sums of C values, C <= 768: a few float
roundings of y's size), mean within a float32 rounding of it plus 1e-6 of the spread, inv_std
within 1e-5 relative.
"""
import math

import numpy as np
import pytest
from scipy.special import erf, ndtr

import decaf
from decaf import kernels
from decaf.gradcheck import layer_net_spec

compiled = pytest.importorskip("decaf.kernels._compiled")


def gelu64(x):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"):
        return x * (1 + erf(x / math.sqrt(2))) / 2


def gelu_inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([
        np.linspace(-20, 20, 200001), rng.standard_normal(20000) * 3,
        np.float32(-0.5 * math.sqrt(2)) + np.arange(-50, 50) * np.float32(6e-8),   # both sides of the 0 / -0.7 seams
        np.arange(-50, 50) * np.float32(1e-8), [0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40],
        [1e3, -1e3, 1e30, -1e30, 3e38, -3e38], [np.inf, -np.inf, np.nan]]).astype(np.float32)


def test_gelu_against_float64_formula(isa):
    x = gelu_inputs()
    y = np.full_like(x, 7.0)
    compiled.gelu(x, y)
    finite = np.isfinite(x)
    ref = gelu64(x)
    bound = 3e-7 * np.maximum(1.0, np.abs(x[finite].astype(np.float64)))
    err = np.abs(y[finite] - ref[finite])
    assert (err <= bound).all(), f"{isa}: worst at x = {x[finite][np.argmax(err / bound)]}: {np.max(err / bound)} x bound"
    # inf -> inf, -inf -> 0 (not NaN), NaN -> NaN
    assert y[-3] == np.inf and y[-2] == 0 and np.isnan(y[-1])
    # the lower tail keeps a relative accuracy (no 1 + erf cancelling) down to where y leaves float's
    # range: against x Phi(x) with SciPy's ndtr (the float64 formula itself cancels there)
    tail = finite & (x < -1) & (np.abs(ref) > 1e-30)
    x64 = x[tail].astype(np.float64)
    np.testing.assert_allclose(y[tail], x64 * ndtr(x64), rtol=5e-5, atol=0)
    z = x.copy()
    compiled.gelu(z, z)                                     # in place: the same values
    np.testing.assert_array_equal(z, y)
    for n in (1, 7, 15, 16, 17, 40):                        # short runs: the vector loops' remainders
        part = x[100000 - n // 2:][:n] * np.float32(1.37)
        out = np.empty_like(part)
        compiled.gelu(part, out)
        np.testing.assert_allclose(out, gelu64(part), rtol=0, atol=3e-7 * max(1.0, np.abs(part).max()))


def test_gelu_numpy_twin_and_dispatch():
    x = gelu_inputs()
    finite = np.isfinite(x)
    for backend in ("numpy", "compiled"):
        with kernels.using_backend(backend):
            y = np.empty_like(x)
            kernels.gelu(x, y)
        np.testing.assert_allclose(y[finite], gelu64(x)[finite], rtol=0,
                                   atol=3e-7 * np.maximum(1, np.abs(x[finite])).max())
        assert y[-3] == np.inf and y[-2] == 0 and np.isnan(y[-1])
    x64 = x.astype(np.float64)               # float64 takes the reference (SciPy's ndtr) in either backend
    y64 = np.empty_like(x64)
    kernels.gelu(x64, y64)
    np.testing.assert_allclose(y64[finite], gelu64(x64)[finite], rtol=0, atol=1e-15 * np.abs(x64[finite]).max())
    assert y64[-3] == np.inf and y64[-2] == 0 and np.isnan(y64[-1])


def test_gelu_bad_arguments():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="values into"):
        compiled.gelu(x, np.empty(9, np.float32))
    with pytest.raises(ValueError, match="overlaps"):
        compiled.gelu(x[:-1], x[1:])
    with pytest.raises(ValueError, match="dtype mismatch"):
        compiled.gelu(x.astype(np.float64), np.empty(10, np.float32))
    with pytest.raises(ValueError):
        compiled.gelu(np.ones((2, 5), np.float32), np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="must be flat"):
        with kernels.using_backend("numpy"):
            kernels.gelu(np.ones((2, 5), np.float32), np.empty((2, 5), np.float32))
    compiled.gelu(np.empty(0, np.float32), np.empty(0, np.float32))     # nothing to do


# ---- LayerNorm over one axis --------------------------------------------------------------------

def layernorm64(x, gamma, beta, eps):
    """(y, mean, inv_std) over axis 1 of (outer, C, inner), in float64 with explicit sums."""
    x = np.asarray(x, np.float64)
    C = x.shape[1]
    mean = x.sum(axis=1) / C
    var = ((x - mean[:, None]) ** 2).sum(axis=1) / C
    inv_std = 1 / np.sqrt(var + eps)
    y = (x - mean[:, None]) * inv_std[:, None] * np.asarray(gamma, np.float64)[:, None] + \
        np.asarray(beta, np.float64)[:, None]
    return y, mean, inv_std


def ln_case(outer, C, inner, offset=0.0, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (offset + spread * rng.standard_normal((outer, C, inner))).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(C)).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    return x, gamma, beta


def outputs(x):
    outer, _, inner = x.shape
    return np.full_like(x, 7.0), np.full((outer, inner), 7.0, np.float32), np.full((outer, inner), 7.0, np.float32)


def check_layernorm(x, gamma, beta, eps, y, mean, inv_std, spread):
    ry, rmean, rinv = layernorm64(x, gamma, beta, eps)
    np.testing.assert_allclose(y, ry, rtol=0, atol=2e-6 * max(1.0, np.abs(ry).max()))
    np.testing.assert_allclose(mean, rmean, rtol=1.2e-7, atol=1e-6 * spread)
    np.testing.assert_allclose(inv_std, rinv, rtol=1e-5)


SHAPES = [(1, 96, 3136), (1, 768, 49), (2, 384, 196), (3, 7, 13), (2, 13, 7), (1, 1, 5), (3, 2, 1),
          (2, 768, 1), (3, 384, 1), (1, 5, 1), (2, 3, 300), (1, 200, 37), (2, 17, 1000)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
def test_layernorm_against_float64(isa, shape):
    x, gamma, beta = ln_case(*shape)
    y, mean, inv_std = outputs(x)
    compiled.layernorm(x, gamma, beta, 1e-5, y, mean, inv_std)
    check_layernorm(x, gamma, beta, 1e-5, y, mean, inv_std, 1.0)


@pytest.mark.parametrize("shape", [(1, 96, 3136), (2, 768, 49), (2, 768, 1), (1, 13, 7)])
@pytest.mark.parametrize("offset,spread", [(1e3, 0.01), (-3e3, 1.0), (1e3, 1e-3)])
def test_layernorm_large_offset_small_spread(isa, shape, offset, spread):
    """Values about 1e3 whose spread is 1e-2 .. 1e-3: sums of squares would lose everything; the
    shifted two-pass sums give y as well as for centred data."""
    x, gamma, beta = ln_case(*shape, offset=offset, spread=spread, seed=1)
    y, mean, inv_std = outputs(x)
    compiled.layernorm(x, gamma, beta, 1e-9, y, mean, inv_std)
    check_layernorm(x, gamma, beta, 1e-9, y, mean, inv_std, spread)


def test_layernorm_constant_vectors_and_eps():
    """All C values equal: var 0, y = beta exactly, inv_std = 1 / sqrt(eps)."""
    x = np.full((2, 6, 40), 5.0, np.float32)
    gamma, beta = np.arange(1, 7, dtype=np.float32), np.arange(6, dtype=np.float32)
    y, mean, inv_std = outputs(x)
    compiled.layernorm(x, gamma, beta, 0.25, y, mean, inv_std)
    np.testing.assert_array_equal(y, np.broadcast_to(beta[None, :, None], x.shape))
    assert (mean == 5).all() and (inv_std == 2).all()


def test_layernorm_in_place_and_numpy_twin(isa):
    x, gamma, beta = ln_case(2, 96, 300, offset=2.0)
    y, mean, inv_std = outputs(x)
    compiled.layernorm(x, gamma, beta, 1e-5, y, mean, inv_std)
    z, m2, s2 = x.copy(), *outputs(x)[1:]
    compiled.layernorm(z, gamma, beta, 1e-5, z, m2, s2)       # y is x
    np.testing.assert_array_equal(z, y)
    np.testing.assert_array_equal(m2, mean)
    with kernels.using_backend("numpy"):
        w, m3, s3 = outputs(x)
        kernels.layernorm(x, gamma, beta, 1e-5, w, m3, s3)
    check_layernorm(x, gamma, beta, 1e-5, w, m3, s3, 1.0)
    x64 = x.astype(np.float64)
    y64, m64, s64 = (a.astype(np.float64) for a in outputs(x))
    kernels.layernorm(x64, gamma.astype(np.float64), beta.astype(np.float64), 1e-5, y64, m64, s64)
    ry, rmean, rinv = layernorm64(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(y64, ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s64, rinv, rtol=1e-12)


def test_layernorm_bad_arguments():
    x, gamma, beta = ln_case(2, 4, 5)
    y, mean, inv_std = outputs(x)
    good = dict(x=x, gamma=gamma, beta=beta, eps=1e-5, y=y, mean=mean, inv_std=inv_std)

    def call(**changes):
        a = dict(good, **changes)
        compiled.layernorm(a["x"], a["gamma"], a["beta"], a["eps"], a["y"], a["mean"], a["inv_std"])

    for changes, message in [({"gamma": gamma[:3]}, "gamma has shape"), ({"beta": np.ones(5, np.float32)}, "beta has shape"),
                             ({"y": np.empty((2, 4, 6), np.float32)}, "y has shape"),
                             ({"mean": np.empty((2, 4), np.float32)}, "mean has shape"),
                             ({"inv_std": np.empty((5, 2), np.float32)}, "inv_std has shape"),
                             ({"eps": -1.0}, "eps must be >= 0"), ({"inv_std": mean}, "apart"),
                             ({"mean": x[0, :2, :]}, "apart"), ({"y": np.ascontiguousarray(x[::-1])[::-1]}, None),
                             ({"x": x.astype(np.float64)}, "dtype mismatch"), ({"x": x[:, :, ::2]}, None),
                             ({"x": x.reshape(2, 20)}, None), ({"x": np.empty((2, 0, 5), np.float32), "gamma": gamma[:0],
                                                               "beta": beta[:0], "y": np.empty((2, 0, 5), np.float32)}, "C = 0")]:
        with pytest.raises(ValueError, match=message):
            call(**changes)
    with pytest.raises(ValueError, match="must be a 3-D"), kernels.using_backend("numpy"):
        kernels.layernorm(x.reshape(2, 20), gamma, beta, 1e-5, y, mean, inv_std)
    with pytest.raises(ValueError, match="gamma has shape"), kernels.using_backend("numpy"):
        kernels.layernorm(x, gamma[:3], beta, 1e-5, y, mean, inv_std)
    flat = np.zeros(45, np.float32)                  # y starts 5 floats after x
    with pytest.raises(ValueError, match="overlaps x"):
        compiled.layernorm(flat[:40].reshape(2, 4, 5), gamma, beta, 1e-5, flat[5:].reshape(2, 4, 5), mean, inv_std)


# ---- the layers ---------------------------------------------------------------------------------

def spy(monkeypatch, name):
    """Count the calls of kernels.<name> (what the layers call)."""
    calls = []
    real = getattr(kernels, name)
    monkeypatch.setattr(kernels, name, lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


LAYER_CASES = [({"axis": 1, "end_axis": 1}, (2, 96, 7, 7), True),       # ConvNeXt's LayerNorm2d (NCHW)
               ({"axis": -1}, (2, 5, 48), True),                         # a token's features
               ({"axis": 2, "end_axis": 2}, (2, 3, 10, 4), True),         # one middle axis
               ({"axis": 2, "end_axis": -1}, (2, 3, 4, 5), False),        # two axes: the NumPy path
               ({}, (2, 3, 2, 2), False)]


@pytest.mark.parametrize("params,shape,kernel", LAYER_CASES, ids=["channels", "last", "middle", "last_two", "all"])
def test_layernorm_layer_forward_backward(monkeypatch, params, shape, kernel):
    """The float32 net (kernel when over one axis) against the same net in float64 (NumPy path,
    which tests/layers/test_layernorm.py checks against finite differences): forward, and backward
    from xhat recomputed out of the kept mean and inv_std."""
    calls = spy(monkeypatch, "layernorm")
    layer = {"name": "ln", "type": "LayerNorm", **params, "weight_filler": {"type": "gaussian", "std": 1.0},
             "bias_filler": {"type": "gaussian", "std": 1.0}}
    spec = layer_net_spec(layer, [shape])
    net32 = decaf.Net(spec, force_backward=True, seed=3)
    net64 = decaf.Net(spec, force_backward=True, seed=3).astype(np.float64)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 2 + 1.5).astype(np.float32)
    dy = rng.standard_normal(shape)
    y32, y64 = net32.forward(in0=x)["ln"], net64.forward(in0=x.astype(np.float64))["ln"]
    assert bool(calls) == kernel and all(len(s) == 3 and s[1] == shape[params.get("axis", 1)] for s in calls)
    np.testing.assert_allclose(y32, y64, rtol=0, atol=2e-6 * np.abs(y64).max())
    dx32 = net32.backward({"ln": dy.astype(np.float32)})["in0"]
    dx64 = net64.backward({"ln": dy})["in0"]
    np.testing.assert_allclose(dx32, dx64, rtol=0, atol=1e-5 * np.abs(dx64).max())
    for name in ("ln.weight", "ln.bias"):
        d32, d64 = net32.params[name].diff, net64.params[name].diff
        np.testing.assert_allclose(d32, d64, rtol=0, atol=1e-5 * np.abs(d64).max())
    ln = next(layer for layer in net32.order if layer.name == "ln")
    stats = tuple(1 if i in ln.norm_axes else n for i, n in enumerate(shape))
    assert ln.mean.shape == ln.inv_std.shape == stats and not hasattr(ln, "xhat")


def test_gelu_layer_uses_the_kernel(monkeypatch):
    calls = spy(monkeypatch, "gelu")
    shape = (2, 384, 5, 5)
    x = (np.random.default_rng(4).standard_normal(shape) * 4).astype(np.float32)
    x.flat[:4] = [-50.0, 50.0, 0.0, -1e3]
    spec = layer_net_spec({"name": "g", "type": "GELU"}, [shape])
    y = decaf.Net(spec).forward(in0=x)["g"]
    assert calls == [(x.size,)]
    np.testing.assert_allclose(y, gelu64(x), rtol=0, atol=3e-7 * np.abs(x).max())
    tanh = layer_net_spec({"name": "g", "type": "GELU", "approximate": "tanh"}, [shape])
    decaf.Net(tanh).forward(in0=x)
    y64 = decaf.Net(spec).astype(np.float64).forward(in0=x.astype(np.float64))["g"]
    assert calls == [(x.size,)]          # the tanh form and float64 keep the NumPy code
    np.testing.assert_allclose(y64, gelu64(x), rtol=1e-6, atol=1e-12)
