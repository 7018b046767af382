"""The per-channel affine kernel y = act(x s_c + t_c) (csrc/channel_affine.c) and its users,
BatchNorm and Scale (decaf/layers/norm.py): the kernel against a float64 NumPy formula written
here, for every activation, in place or not, on 1 and 2 threads and every instruction set variant
this CPU runs, with bad arguments refused; the layers' test-phase outputs with the activation
fused (one pass) equal to the same layers without it and to the net as written; a DenseNet-like
net (Concat -> BatchNorm -> ReLU -> Convolution) optimized equals it as written, with no ReLU run
on its own; gradients through a fused BatchNorm; a steady-state forward allocates nothing.

Tolerances (float32 against float64): rtol 1e-5 and atol 2e-6 of the largest value for the
kernel (one rounding per multiply and add; the exponential of SiLU and sigmoid within 2 ulp);
1e-6 relative between nets that run the same arithmetic in another order of layers; 1e-5
between the optimized net, whose convolutions absorb folded BatchNorms (weights rounded once
more), and the net as written.
"""
import tracemalloc

import numpy as np
import pytest

import decaf
from decaf import Net, cpu
from decaf.kernels import reference

_compiled = pytest.importorskip("decaf.kernels._compiled")

INF = float("inf")
# one act tuple per kind (kind, lo, hi, alpha) as decaf.layer.Epilogue.act gives them
ACTS = [None, ("clamp", 0.0, INF, 0.0), ("clamp", 0.0, 6.0, 0.0), ("clamp", -0.5, 0.75, 0.0),
        ("leaky", 0.0, INF, 0.1), ("hardswish", 0.0, INF, 0.0), ("silu", 0.0, INF, 1.0),
        ("silu", 0.0, INF, 1.7), ("sigmoid", 0.0, INF, 0.0), ("hardsigmoid", 0.5, 1.0, 1 / 6)]
# the last two run on 2 threads when given (over 128k values; an exponential: over 4k)
SHAPES = [(1, 5, 7, 7), (3, 7, 3, 5), (2, 13, 1, 1), (1, 3, 1, 29), (2, 48, 19, 23), (2, 64, 33, 35)]


def act_f64(v, act):
    """The activations of csrc/activation.h, from their definitions, in float64."""
    if act is None:
        return v
    kind, lo, hi, alpha = act
    if kind == "clamp":
        return np.minimum(np.maximum(v, lo), hi)
    if kind == "leaky":
        return np.where(v < 0, alpha * v, v)
    if kind == "hardswish":
        return v * np.minimum(np.maximum(v + 3, 0), 6) / 6
    if kind == "silu":
        return v / (1 + np.exp(-alpha * v))
    if kind == "sigmoid":
        return 1 / (1 + np.exp(-v))
    if kind == "hardsigmoid":
        return np.minimum(np.maximum(alpha * v + lo, 0), hi)
    raise AssertionError(kind)


def close(actual, expected, rtol=1e-5):
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=2e-6 * scale)


@pytest.fixture(params=[1, 2])
def threads(request):
    """decaf's kernel threads (the BLAS is not used here)."""
    before = _compiled.get_num_threads()
    _compiled.set_num_threads(request.param)
    yield request.param
    _compiled.set_num_threads(before)


def operands(rng, shape):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    scale = rng.uniform(-2, 2, shape[1]).astype(np.float32)
    shift = rng.uniform(-1, 1, shape[1]).astype(np.float32)
    expected = x.astype(np.float64) * scale[:, None, None] + shift[:, None, None]
    return x, scale, shift, expected


# ---- the kernel ------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
@pytest.mark.parametrize("act", ACTS, ids=lambda a: "none" if a is None else f"{a[0]}-{a[2]}-{a[3]:.2f}")
def test_kernel_matches_numpy_float64(impl, act, threads, rng):
    for shape in SHAPES:
        x, scale, shift, pre = operands(rng, shape)
        # into a new array
        y = np.full(shape, np.nan, np.float32)
        impl.channel_affine(x, scale, shift, y, act)
        close(y, act_f64(pre, act))
        # in place
        z = x.copy()
        impl.channel_affine(z, scale, shift, z, act)
        np.testing.assert_array_equal(z, y)
        if act is not None:      # the activation into its own array, y keeping the values before it
            out = np.full(shape, np.nan, np.float32)
            impl.channel_affine(x, scale, shift, y, act, out)
            close(y, pre)
            close(out, act_f64(pre, act))


@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
@pytest.mark.parametrize("act", ACTS[1:4], ids=["relu", "relu6", "clamp"])
def test_a_clamp_keeps_nan_and_bounds_infinities(impl, act, threads, rng):
    """The clamp runs in the affine's own loop (one pass): a NaN stays NaN, +-inf end at the bounds,
    in place and into a new array, at every position of a plane wider than a vector."""
    shape = (2, 6, 9, 37)
    x, scale, shift, _ = operands(rng, shape)
    scale = np.abs(scale) + 0.5                       # (a positive scale keeps the infinities' signs)
    spots = [(0, 0, 0, 0), (0, 2, 4, 35), (1, 5, 8, 36), (1, 3, 0, 17)]
    for (b, c, h, w), v in zip(spots, [np.nan, np.inf, -np.inf, np.nan]):
        x[b, c, h, w] = v
    pre = x.astype(np.float64) * scale[:, None, None] + shift[:, None, None]
    want = act_f64(pre, act)
    y = np.full(shape, 7.0, np.float32)
    impl.channel_affine(x, scale, shift, y, act)
    z = x.copy()
    impl.channel_affine(z, scale, shift, z, act)
    for got in (y, z):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got[0, 0, 0, 0]) and np.isnan(got[1, 3, 0, 17])
        assert got[0, 2, 4, 35] == act[2] and got[1, 5, 8, 36] == act[1]
        finite = ~np.isnan(want)
        close(got[finite], want[finite])


@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
def test_kernel_without_a_shift(impl, threads, rng):
    """shift None: y = x * scale[c] (the same values as a shift of zeros), with an activation too."""
    for shape in SHAPES:
        x, scale, _, _ = operands(rng, shape)
        for act in (None, ("clamp", 0.0, INF, 0.0)):
            y, z = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
            impl.channel_affine(x, scale, None, y, act)
            impl.channel_affine(x, scale, np.zeros(shape[1], np.float32), z, act)
            np.testing.assert_array_equal(y, z)
            close(y, act_f64(x.astype(np.float64) * scale[:, None, None], act))


@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
def test_kernel_reads_a_run_of_channels_with_the_images_apart(impl, threads, rng):
    """x = wide[:, c0:c1] (a DenseNet concatenation's prefix at batch > 1): each image contiguous,
    the images C_wide H W floats apart; the same values as from a contiguous copy of it, the
    activation into y or into its own array; the wide tensor untouched."""
    for shape in SHAPES:
        B, C, H, W = shape
        wide = (rng.standard_normal((B, C + 5, H, W)) * 3).astype(np.float32)
        for c0 in (0, 5):
            x = wide[:, c0:c0 + C]
            before = wide.copy()
            _, scale, shift, _ = operands(rng, shape)
            pre = x.astype(np.float64) * scale[:, None, None] + shift[:, None, None]
            act = ("clamp", 0.0, 6.0, 0.0)
            y, out = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
            impl.channel_affine(x, scale, shift, y, act)
            close(y, act_f64(pre, act))
            impl.channel_affine(x, scale, shift, y, act, out)
            close(y, pre)
            close(out, act_f64(pre, act))
            np.testing.assert_array_equal(wide, before)


def test_channels_apart_refused_where_the_kernel_cannot_read_them(rng):
    """Images out of order or overlapping, a plane not contiguous, y or act_out in x's memory while
    x is not contiguous: refused with the reason."""
    wide = rng.standard_normal((3, 8, 4, 5)).astype(np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    y = np.empty((3, 3, 4, 5), np.float32)
    relu = ("clamp", 0.0, INF, 0.0)
    with pytest.raises(ValueError, match="out of order"):
        _compiled.channel_affine(wide[::-1, :3], ones, zeros, y)
    with pytest.raises(ValueError, match="each image of x must be contiguous"):
        _compiled.channel_affine(wide[:, ::2][:, :3], ones, zeros, y)
    with pytest.raises(ValueError, match="contiguous"):               # (y must be)
        _compiled.channel_affine(wide[:, :3], ones, zeros, wide[:, :3])
    flat = wide.reshape(-1)
    with pytest.raises(ValueError, match="act_out is x's memory"):
        _compiled.channel_affine(wide[:, :3], ones, zeros, y, relu, flat[:180].reshape(3, 3, 4, 5))
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.channel_affine(wide[:, :3], ones, zeros, y, relu, flat[7:187].reshape(3, 3, 4, 5))
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.channel_affine(wide[:, :3], ones, zeros, flat[200:380].reshape(3, 3, 4, 5))
    out = np.empty_like(y)                                     # apart from x: fine
    _compiled.channel_affine(wide[:, :3], ones, zeros, y, relu, out)
    np.testing.assert_array_equal(out, np.maximum(wide[:, :3], 0))


def test_threads_and_variants_give_the_same_bits(rng):
    """1 or 2 threads, each instruction set variant: every value is computed the same way."""
    x, scale, shift, _ = operands(rng, (2, 64, 33, 35))
    before, isa = _compiled.get_num_threads(), cpu.get_isa()
    results = []
    try:
        for name in cpu.supported_isas():
            cpu.set_isa(name)
            for n in (1, 2):
                _compiled.set_num_threads(n)
                for act in (("clamp", 0.0, INF, 0.0), ("silu", 0.0, INF, 1.0)):
                    y = np.empty_like(x)
                    _compiled.channel_affine(x, scale, shift, y, act)
                    results.append((name, n, act[0], y))
    finally:
        _compiled.set_num_threads(before)
        cpu.set_isa(isa)
    for name, n, kind, y in results:
        first = next(r[3] for r in results if r[2] == kind)
        np.testing.assert_allclose(y, first, rtol=1e-6, atol=1e-6, err_msg=f"{name}, {n} threads, {kind}")


def test_empty_tensors_are_fine():
    for shape in [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4)]:
        x = np.zeros(shape, np.float32)
        c = shape[1]
        _compiled.channel_affine(x, np.ones(c, np.float32), np.zeros(c, np.float32), x.copy(), ("clamp", 0.0, INF, 0.0))


@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
def test_bad_arguments_are_refused(impl, rng):
    x, scale, shift, _ = operands(rng, (2, 3, 4, 5))
    y = np.empty_like(x)
    relu = ("clamp", 0.0, INF, 0.0)
    bad = [
        ((x, scale[:2], shift, y), {}, "scale"),
        ((x, scale, np.zeros(4, np.float32), y), {}, "shift"),
        ((x, scale, shift, np.empty((2, 3, 4, 6), np.float32)), {}, "y"),
        ((x, scale, shift, y, relu, np.empty((2, 3, 5, 4), np.float32)), {}, "act_out"),
        ((x, scale, shift, y, None, np.empty_like(x)), {}, "act_out without act"),
        ((x, scale, shift, y, ("tanh", 0.0, 1.0, 0.0)), {}, "unknown activation"),
        ((x.astype(np.float64), scale, shift, y), {}, "dtype|mismatch"),
        ((x[:, :, :, ::2], scale, shift, np.empty((2, 3, 4, 3), np.float32)), {}, "contiguous"),
        ((x.reshape(2, 3, 20), scale, shift, y.reshape(2, 3, 20)), {}, "dimensions|4-D"),
    ]
    for args, kw, words in bad:
        with pytest.raises(ValueError, match=words):
            impl.channel_affine(*args, **kw)


def test_overlapping_outputs_are_refused(rng):
    """y may be x itself, not a shifted view of the same memory (the C loops would read values
    already written)."""
    buffer = rng.standard_normal(2 * 3 * 4 * 5 + 1).astype(np.float32)
    x, y = buffer[:-1].reshape(2, 3, 4, 5), buffer[1:].reshape(2, 3, 4, 5)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.channel_affine(x, ones, zeros, y)
    with pytest.raises(ValueError, match="overlaps"):
        _compiled.channel_affine(x, ones, zeros, x.copy(), ("clamp", 0.0, INF, 0.0), y)


@pytest.mark.parametrize("impl", [_compiled, reference], ids=["compiled", "numpy"])
def test_batchnorm_scale_shift(impl, rng):
    c = 37
    mean, var = rng.standard_normal(c).astype(np.float32), rng.uniform(0.01, 3, c).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    s, t = np.empty(c, np.float32), np.empty(c, np.float32)
    m64, v64 = mean.astype(np.float64), var.astype(np.float64)
    for w, b in ((gamma, beta), (None, None)):
        impl.batchnorm_scale_shift(mean, var, w, b, 1e-3, s, t)
        s64 = (1.0 if w is None else w.astype(np.float64)) / np.sqrt(v64 + 1e-3)
        close(s, s64, rtol=1e-6)
        close(t, (0.0 if b is None else b.astype(np.float64)) - s64 * m64, rtol=1e-6)
    with pytest.raises(ValueError, match="var"):
        impl.batchnorm_scale_shift(mean, var[:3], None, None, 1e-5, s, t)
    with pytest.raises(ValueError, match="weight"):
        impl.batchnorm_scale_shift(mean, var, gamma[:3], None, 1e-5, s, t)


# ---- BatchNorm and Scale, with and without the activation fused ------------------------------------

def with_activation(layers, top, activation, unfused):
    """layers + the activation reading top (into "act", or in place when its top is top); unfused: a
    Dropout (y = x at test time) between, so that the net fuses nothing (run it with optimize=False,
    which keeps the Dropout; an in-place activation then works on the Dropout's top)."""
    act = dict(activation, name="act", bottom=top)
    act.setdefault("top", "act")
    if unfused:
        layers.append({"name": "drop", "type": "Dropout", "bottom": top, "top": f"{top}_d"})
        act["bottom"] = f"{top}_d"
        if act["top"] == top:
            act["top"] = f"{top}_d"
    return layers + [act]


def affine_net(activation, affine, unfused=False):
    """input -> Concat(pool, conv) -> affine -> activation (into "act", or in place when the
    activation's top is "aff"; unfused: see with_activation)."""
    layers = [
        {"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool", "kernel_size": 3, "stride": 1,
         "pad": 1, "pool": "AVE"},
        {"name": "conv", "type": "Convolution", "bottom": "data", "top": "conv", "num_output": 3, "kernel_size": 1},
        {"name": "cat", "type": "Concat", "bottom": ["pool", "conv"], "top": "cat"},
        dict(affine, name="aff", bottom="cat", top="aff")]
    layers = with_activation(layers, "aff", activation, unfused)
    return {"name": "affine", "inputs": {"data": [6, 5, 5]}, "layers": layers}


ACTIVATIONS = [{"type": "ReLU"}, {"type": "ReLU", "top": "aff"}, {"type": "ReLU6"},
               {"type": "LeakyReLU", "negative_slope": 0.2, "top": "aff"}, {"type": "Clip", "min": -0.5, "max": 0.5},
               {"type": "Sigmoid"}, {"type": "SiLU"}, {"type": "HardSwish"}]
AFFINES = [{"type": "BatchNorm", "affine": True}, {"type": "BatchNorm"}, {"type": "Scale", "bias_term": True},
           {"type": "Scale"}]


def randomize(net, rng):
    for name, p in net.params.items():
        p.data[...] = rng.uniform(0.5, 2.0, p.shape) if name.endswith(".var") else rng.standard_normal(p.shape)


@pytest.mark.parametrize("affine", AFFINES, ids=lambda a: f"{a['type']}{'+' if len(a) > 1 else ''}")
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: f"{a['type']}{'-in-place' if 'top' in a else ''}")
def test_fused_equals_unfused_and_as_written(affine, activation, rng):
    fused = Net(affine_net(activation, affine))
    randomize(fused, rng)
    arrays = fused.param_arrays()
    unfused = Net.from_arrays(affine_net(activation, affine, unfused=True), arrays, optimize=False)
    written = Net.from_arrays(affine_net(activation, affine), arrays, optimize=False)
    assert fused.layers["act"].fused and written.layers["act"].fused and not unfused.layers["act"].fused
    x = rng.standard_normal((2, 6, 5, 5)).astype(np.float32)
    top, other = ("aff", "aff_d") if activation.get("top") == "aff" else ("act", "act")
    a = fused.forward(data=x, outputs=[top, "cat"])
    b = unfused.forward(data=x, outputs=[other])[other]
    c = written.forward(data=x, outputs=[top])[top]
    np.testing.assert_allclose(a[top], b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    np.testing.assert_allclose(a[top], c, rtol=1e-6, atol=1e-6 * np.abs(c).max())
    if top == "act":      # the affine's own top keeps the values before the activation
        np.testing.assert_allclose(fused.forward(data=x, outputs=["aff"])["aff"],
                                   unfused.forward(data=x, outputs=["aff"])["aff"], rtol=1e-6, atol=1e-6)
    # against the formulas in float64
    p = {k: v.astype(np.float64) for k, v in arrays.items()}
    cat = a["cat"].astype(np.float64)

    def channel(v):
        return v.reshape(1, -1, 1, 1)
    if affine["type"] == "BatchNorm":
        pre = (cat - channel(p["aff.mean"])) / np.sqrt(channel(p["aff.var"]) + 1e-5)
        if affine.get("affine"):
            pre = pre * channel(p["aff.weight"]) + channel(p["aff.bias"])
    else:
        pre = cat * channel(p["aff.weight"]) + (channel(p["aff.bias"]) if affine.get("bias_term") else 0)
    close(a[top], act_f64(pre, fused.layers["act"].epilogue().act))


def test_inner_product_outputs_and_batches(rng):
    """(N, C) tensors (one value per channel: the kernel's HW 1 path), several images, in float64 too."""
    spec = {"name": "fc", "inputs": {"data": [8]}, "layers": [
        {"name": "ip", "type": "InnerProduct", "bottom": "data", "top": "ip", "num_output": 6},
        {"name": "ip2", "type": "InnerProduct", "bottom": "data", "top": "ip2", "num_output": 6},
        {"name": "sum", "type": "Eltwise", "bottom": ["ip", "ip2"], "top": "sum"},
        {"name": "bn", "type": "BatchNorm", "bottom": "sum", "top": "bn", "affine": True},
        {"name": "r", "type": "ReLU", "bottom": "bn", "top": "bn"}]}
    net = Net(spec)
    randomize(net, rng)
    assert net.layers["r"].fused
    x = rng.standard_normal((5, 8)).astype(np.float32)
    p = {k: v.astype(np.float64) for k, v in net.param_arrays().items()}
    s = x.astype(np.float64) @ (p["ip.weight"] + p["ip2.weight"]).T + p["ip.bias"] + p["ip2.bias"]
    expected = np.maximum((s - p["bn.mean"]) / np.sqrt(p["bn.var"] + 1e-5) * p["bn.weight"] + p["bn.bias"], 0)
    close(net.forward(data=x, outputs=["bn"])["bn"], expected)
    net.astype(np.float64)
    np.testing.assert_allclose(net.forward(data=x.astype(np.float64), outputs=["bn"])["bn"], expected,
                               rtol=1e-12, atol=1e-12)


# ---- a DenseNet-like net -------------------------------------------------------------------------

def densenet_spec():
    """stem conv -> BN -> ReLU -> pool; two dense layers (Concat -> BN -> ReLU -> 1x1 conv -> BN ->
    ReLU -> 3x3 conv); a transition (BN -> ReLU -> 1x1 conv -> average pool), as torchvision's."""
    def conv(name, bottom, k, kernel, pad=0):
        return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": k,
                "kernel_size": kernel, "pad": pad, "bias_term": False}

    def bn_relu(name, bottom):
        return [{"name": f"{name}_bn", "type": "BatchNorm", "bottom": bottom, "top": f"{name}_bn", "affine": True},
                {"name": f"{name}_relu", "type": "ReLU", "bottom": f"{name}_bn", "top": f"{name}_relu"}]

    layers = [conv("stem", "data", 8, 3, 1), *bn_relu("stem", "stem"),
              {"name": "pool0", "type": "Pooling", "bottom": "stem_relu", "top": "pool0", "kernel_size": 2,
               "stride": 2, "pool": "MAX"}]
    features = ["pool0"]
    for i in (1, 2):
        cat = features[0] if len(features) == 1 else f"cat{i}"
        if len(features) > 1:
            layers.append({"name": cat, "type": "Concat", "bottom": list(features), "top": cat})
        layers += [*bn_relu(f"d{i}a", cat), conv(f"d{i}a", f"d{i}a_relu", 12, 1),
                   *bn_relu(f"d{i}b", f"d{i}a"), conv(f"d{i}b", f"d{i}b_relu", 4, 3, 1)]
        features.append(f"d{i}b")
    layers += [{"name": "cat3", "type": "Concat", "bottom": list(features), "top": "cat3"},
               *bn_relu("t", "cat3"), conv("t", "t_relu", 6, 1),
               {"name": "tpool", "type": "Pooling", "bottom": "t", "top": "tpool", "kernel_size": 2, "stride": 2,
                "pool": "AVE"}]
    return {"name": "densenet_like", "inputs": {"data": [3, 12, 12]}, "layers": layers}


def test_densenet_like_optimized_equals_as_written(rng):
    fast = Net(densenet_spec())
    randomize(fast, rng)
    plain = Net.from_arrays(densenet_spec(), fast.param_arrays(), optimize=False)
    for n in (1, 3):
        x = rng.standard_normal((n, 3, 12, 12)).astype(np.float32)
        a, b = fast.forward(data=x)["tpool"], plain.forward(data=x)["tpool"]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    graph = fast.optimized_graph()
    run = [s for s in graph.steps if not s.fused]
    assert not [s.layer.name for s in run if s.layer.type_name == "ReLU"]      # every ReLU inside its producer
    bns = [s.layer.name for s in run if s.layer.type_name == "BatchNorm"]
    assert bns == ["d1a_bn", "d2a_bn", "t_bn"]          # after a pool or a Concat: left, with their ReLU fused
    folded = {tuple(names): into for kind, names, into in graph.actions if kind == "folded"}
    assert folded == {("stem_bn",): "stem", ("d1b_bn",): "d1a", ("d2b_bn",): "d2a"}
    fused = {names[0]: into for kind, names, into in graph.actions if kind == "fused"}
    assert fused == {"stem_relu": "stem", "d1b_relu": "d1a", "d2b_relu": "d2a"}   # moved from the folded BatchNorms
    # every ReLU writes a new blob, which its producer now fills alone: the values before it are not kept
    direct = {names[0]: into for kind, names, into in graph.actions if kind == "direct"}
    assert direct == {"stem_relu": "stem", "d1a_relu": "d1a_bn", "d1b_relu": "d1a", "d2a_relu": "d2a_bn",
                      "d2b_relu": "d2a", "t_relu": "t_bn"}
    assert {"d1a_bn", "d2a_bn", "t_bn"} <= graph.missing
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    for name in ("d1a_bn", "t_bn", "d2b_bn", "t_relu"):     # blobs the graph no longer computes, and one it does
        a, b = fast.forward(data=x, outputs=[name])[name], plain.forward(data=x, outputs=[name])[name]
        # (1e-5 of the largest value, as above: these reach 80-240 with the random weights, and the
        # as-written net itself differs from the NumPy backend by up to 6e-5 there)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


def test_densenet_like_gradients_through_fused_batchnorms(rng):
    """Train phase (batch statistics) and test phase with force_backward (global statistics, xhat
    recomputed in backward): central differences in float64 against the analytic gradient."""
    for phase in ("train", "test"):
        net = Net(densenet_spec(), phase=phase, force_backward=True)
        randomize(net, rng)
        net.astype(np.float64)
        assert net.layers["t_relu"].fused
        x = rng.standard_normal((2, 3, 12, 12))
        g = rng.standard_normal((2, 6, 3, 3))
        state = {name: p.data.copy() for name, p in net.params.items()}

        def objective():
            for name, p in net.params.items():          # the train phase moves the running statistics
                p.data[...] = state[name]
            return float(np.sum(g * net.forward(data=x)["tpool"]))

        objective()
        net.backward({"tpool": g})
        for name in ("d1a_bn.weight", "t_bn.bias", "d2a_bn.weight", "d1a.weight"):
            p = net.params[name]
            analytic = p.diff.copy().reshape(-1)
            for i in rng.choice(p.data.size, 3, replace=False):
                old = state[name].reshape(-1)[i]
                state[name].reshape(-1)[i] = old + 1e-6
                plus = objective()
                state[name].reshape(-1)[i] = old - 1e-6
                minus = objective()
                state[name].reshape(-1)[i] = old
                numeric = (plus - minus) / 2e-6
                assert abs(numeric - analytic[i]) <= 1e-6 + 1e-5 * abs(numeric), (phase, name, i, numeric, analytic[i])


def test_steady_state_forward_allocates_nothing(rng):
    """With the compiled kernels (the NumPy reference ones allocate their temporaries)."""
    from decaf import kernels
    if kernels.get_backend() != "compiled":
        pytest.skip("the reference kernels allocate")
    net = Net(densenet_spec())
    randomize(net, rng)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    net.forward(data=x, outputs=["tpool"])
    blob_bytes = sum(b.data.nbytes for b in net.blobs.values())
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    net.forward(data=x, outputs=["tpool"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - before < 30_000, f"forward allocated {peak - before} bytes (blobs hold {blob_bytes})"
