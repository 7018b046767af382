"""Epilogue fusion in the graph optimizer (decaf/optimize.py): activations (ReLU, LeakyReLU, Clip,
HardSwish, SiLU, sigmoid and hard-sigmoid gates) and residual adds done by the convolution before them. Each
optimized net equals the same net run as written (optimize=False) and a NumPy reference where
one is written here; the net as written keeps its layers, so backward and training are as before.

Tolerance: float32, rtol 1e-4 and atol 1e-4 of the largest value: the folded weights are rounded
once more, and the kernels' sums and exponentials differ in order and in the last bits.
"""
import io
import pathlib
import sys
import warnings

import numpy as np
import pytest

from decaf import Net

TOL = 1e-4


def close(a, b, name=""):
    scale = max(float(np.abs(b).max()), 1.0)
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * scale, err_msg=name)


def conv(name, bottom, n, k=3, group=1, bias=True, stride=1):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": n,
            "kernel_size": k, "pad": k // 2, "group": group, "bias_term": bias, "stride": stride}


def bn(name, bottom):
    return {"name": name, "type": "BatchNorm", "bottom": bottom, "top": name, "affine": True}


def residual_spec(add="Eltwise", act=("ReLU", {}), in_place=True):
    """A ResNet basic block: conv-BN-ReLU, conv-BN, + the block's input, then act."""
    add_layer = ({"name": "add", "type": "Eltwise", "bottom": ["b2", "stem"], "top": "add"} if add == "Eltwise"
                 else {"name": "add", "type": "Arithmetic", "bottom": ["stem", "b2"], "top": "add", "operation": "add"})
    kind, params = act
    return {"name": "res", "inputs": {"data": [3, 9, 9]}, "layers": [
        conv("stem", "data", 16),
        {"name": "stem_relu", "type": "ReLU", "bottom": "stem", "top": "stem"},
        conv("c1", "stem", 16, bias=False), bn("b1", "c1"),
        {"name": "r1", "type": "ReLU", "bottom": "b1", "top": "b1"},
        conv("c2", "b1", 16, bias=False), bn("b2", "c2"),
        add_layer,
        {"name": "act", "type": kind, "bottom": "add", "top": "add" if in_place else "act", **params},
        {"name": "pool", "type": "Pooling", "bottom": "add" if in_place else "act", "top": "pool", "pool": "ave",
         "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 4},
    ]}


def randomize(net, rng):
    for name, p in net.params.items():
        if name.endswith(".var"):
            p.data[...] = rng.uniform(0.5, 2.0, p.shape)
        elif name.endswith(".weight") and p.data.ndim == 4:
            p.data[...] = rng.standard_normal(p.shape) * np.sqrt(2.0 / p.data[0].size)
        else:
            p.data[...] = rng.standard_normal(p.shape) * 0.5


def pair(spec, seed=0):
    fast = Net(spec, optimize=True)
    randomize(fast, np.random.default_rng(seed))
    plain = Net.from_arrays(spec, fast.param_arrays(), optimize=False)
    return fast, plain


def kinds(net):
    return [(k, names[0], into) for k, names, into in net.optimized_graph().actions]


def numpy_conv(x, w, b=None, pad=1):
    from numpy.lib.stride_tricks import sliding_window_view
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.einsum("nchwij,kcij->nkhw", sliding_window_view(xp, (k, k), axis=(2, 3)), w)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("add", ["Eltwise", "Arithmetic"])
@pytest.mark.parametrize("act", [("ReLU", {}), ("ReLU", {"negative_slope": 0.1}), ("Clip", {"min": -1.0, "max": 2.0})],
                         ids=["relu", "leaky", "clip"])
def test_residual_block_equals_numpy_and_the_written_net(add, act):
    fast, plain = pair(residual_spec(add, act))
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    a = fast.forward(data=x, outputs=["add", "fc"])
    b = plain.forward(data=x, outputs=["add", "fc"])
    assert ("residual", "add", "c2") in kinds(fast) and ("fused", "act", "c2") in kinds(fast)
    assert "add" in fast.layers and "add" in [layer.name for layer in fast.order]   # the net as written keeps it
    assert fast.layers["c2"].fused_residual is None                                  # (the optimizer's is a copy)
    for name in a:
        close(a[name], b[name], name)
    # NumPy, from the formulas: stem = relu(conv + b); b2 = BN(conv(relu(BN(conv(stem))))); act(b2 + stem)
    p = {k: v.astype(np.float64) for k, v in fast.param_arrays().items()}

    def bn_(v, n):
        return ((v - p[f"{n}.mean"].reshape(1, -1, 1, 1)) / np.sqrt(p[f"{n}.var"].reshape(1, -1, 1, 1) + 1e-5)
                * p[f"{n}.weight"].reshape(1, -1, 1, 1) + p[f"{n}.bias"].reshape(1, -1, 1, 1))
    stem = np.maximum(numpy_conv(x, p["stem.weight"], p["stem.bias"]), 0)
    h = np.maximum(bn_(numpy_conv(stem, p["c1.weight"]), "b1"), 0)
    z = bn_(numpy_conv(h, p["c2.weight"]), "b2") + stem
    kind, params = act
    expected = (np.maximum(z, 0) if kind == "ReLU" and not params else np.where(z < 0, 0.1 * z, z)
                if kind == "ReLU" else np.clip(z, -1, 2))
    close(a["add"], expected, "add vs NumPy")


def test_residual_fusion_at_batch_1_and_after_a_batch_change_and_names():
    fast, plain = pair(residual_spec(in_place=False))
    rng = np.random.default_rng(2)
    for batch in (1, 3, 1):
        x = rng.standard_normal((batch, 3, 9, 9)).astype(np.float32)
        a, b = fast.forward(data=x, outputs=["act", "fc"]), plain.forward(data=x, outputs=["act", "fc"])
        for name in a:
            close(a[name], b[name], f"{name} at batch {batch}")
    # the add's operand the fused convolution no longer writes is still reachable (the net as written runs)
    close(fast.forward(data=x, outputs=["b2"])["b2"], plain.forward(data=x, outputs=["b2"])["b2"], "b2")
    assert fast.optimized_graph().plan(["b2"]) is None


def test_training_is_unaffected():
    """Backward after an optimized forward, and a train-phase forward, see the net as written."""
    spec = residual_spec()
    spec["layers"].append({"name": "loss", "type": "EuclideanLoss", "bottom": ["fc", "target"], "top": "loss"})
    spec["inputs"]["target"] = [4]
    fast, plain = pair(spec)
    rng = np.random.default_rng(3)
    feed = {"data": rng.standard_normal((2, 3, 9, 9)).astype(np.float32),
            "target": rng.standard_normal((2, 4)).astype(np.float32)}
    fast.forward(**feed)
    assert any(k == "residual" for k, _, _ in kinds(fast))
    for net in (fast, plain):
        net.forward(**feed)
        net.backward()
    for name, p in plain.params.items():
        np.testing.assert_allclose(fast.params[name].diff, p.diff, rtol=1e-5, atol=1e-6, err_msg=name)


def activation_spec(kind, params, depthwise=False):
    c = 8
    return {"name": "acts", "inputs": {"data": [c, 7, 7]}, "layers": [
        conv("c", "data", c, group=c if depthwise else 1, bias=False), bn("b", "c"),
        {"name": "a", "type": kind, "bottom": "b", "top": "a", **params},
        conv("p", "a", 16, k=1),
        {"name": "g", "type": "Sigmoid", "bottom": "p", "top": "g"},
    ]}


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("kind,params", [("HardSwish", {}), ("SiLU", {}), ("SiLU", {"alpha": 1.702}),
                                         ("ReLU", {"negative_slope": 0.2}), ("Sigmoid", {}),
                                         ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}), ("GELU", {})])
def test_activations_fuse_into_folded_convolutions(kind, params, depthwise):
    fast, plain = pair(activation_spec(kind, params, depthwise))
    x = np.random.default_rng(4).standard_normal((2, 8, 7, 7)).astype(np.float32) * 3
    a, b = fast.forward(data=x, outputs=["a", "g"]), plain.forward(data=x, outputs=["a", "g"])
    assert ("fused", "a", "c") in kinds(fast)
    assert plain.layers["p"].fused_relu and plain.layers["g"].fused      # Net's own fusion: conv -> Sigmoid
    for name in a:
        close(a[name], b[name], name)


# ---- the ONNX families (tests/onnx_families.py), exported by PyTorch and imported ------------------
def imported(name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from onnx_families import build
    from decaf.io.onnx_convert import onnx_to_net

    model, shape = build(name)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros((1,) + shape), buf, opset_version=13, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    path = pathlib.Path(__import__("tempfile").mkdtemp()) / "m.onnx"
    path.write_bytes(buf.getvalue())
    spec, arrays = onnx_to_net(path)
    with torch.no_grad():
        return spec, arrays, shape, model


@pytest.mark.parametrize("family,expect", [
    ("ResNet-18", {"residual": 8, "fused_types": {"ReLU"}}),
    ("MobileNetV3-Large", {"residual": 2, "fused_types": {"HardSwish", "ReLU", "HardSigmoid"}}),
    # PyTorch's SiLU arrives as Sigmoid times its input: one SiLU epilogue per convolution
    ("EfficientNet-B0", {"residual": 2, "silu": 16, "fused_types": {"Sigmoid"}}),
    ("RegNetY", {"residual": 5, "fused_types": {"ReLU", "Sigmoid"}}),
])
def test_imported_families_equal_the_written_net_and_pytorch(family, expect):
    import torch
    spec, arrays, shape, model = imported(family)
    fast = Net.from_arrays(spec, arrays, optimize=True)
    plain = Net.from_arrays(spec, arrays, optimize=False)
    rng = np.random.default_rng(5)
    for batch in (1, 2):
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        a, b = fast.forward(x=x)["y"], plain.forward(x=x)["y"]
        close(a, b, f"{family} at batch {batch}")
        with torch.no_grad():
            close(a, model(torch.from_numpy(x)).numpy(), f"{family} vs PyTorch")
    acts = kinds(fast)
    fused_types = {fast.layers[n].type_name for k, n, _ in acts if k == "fused"}    # by the optimizer
    fused_types |= {layer.type_name for layer in fast.order if layer.fused}          # by Net, as written
    assert expect["fused_types"] <= fused_types, fused_types
    for kind in ("residual", "silu"):
        assert sum(k == kind for k, _, _ in acts) == expect.get(kind, 0), kind


@pytest.mark.parametrize("mul", ["Eltwise", "Arithmetic"])
@pytest.mark.parametrize("also_read", [False, True], ids=["gate", "x-read-elsewhere"])
def test_sigmoid_times_its_input_is_one_silu(mul, also_read):
    """conv -> BN -> (x * sigmoid(x)) as PyTorch exports SiLU; not fused when x has another reader."""
    prod = ({"name": "m", "type": "Eltwise", "bottom": ["b", "s"], "top": "m", "operation": "prod"} if mul == "Eltwise"
            else {"name": "m", "type": "Arithmetic", "bottom": ["s", "b"], "top": "m", "operation": "mul"})
    layers = [conv("c", "data", 8, bias=False), bn("b", "c"),
              {"name": "s", "type": "Sigmoid", "bottom": "b", "top": "s"}, prod, conv("p", "m", 4, k=1)]
    if also_read:
        layers.append({"name": "other", "type": "Pooling", "bottom": "b", "top": "other", "pool": "max",
                       "kernel_size": 2, "stride": 2})
    fast, plain = pair({"name": "silu", "inputs": {"data": [3, 6, 6]}, "layers": layers})
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32) * 2
    outs = ["p", "m"] + (["other"] if also_read else [])
    a, b = fast.forward(data=x, outputs=outs), plain.forward(data=x, outputs=outs)
    assert (("silu", "s", "c") in kinds(fast)) == (not also_read)
    for name in a:
        close(a[name], b[name], name)


@pytest.mark.parametrize("kind,params", [("HardSwish", {}), ("SiLU", {}), ("ReLU", {"negative_slope": 0.1}),
                                         ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5})])
def test_backward_through_an_activation_net_fused_equals_unfused(kind, params):
    """Net fuses these for the net as written (train phase too): the gradients equal those of the
    same net with the activation run as its own layer."""
    def build():
        s = {"name": "t", "inputs": {"data": [4, 6, 6], "target": [3]}, "layers": [
            conv("c", "data", 8), {"name": "a", "type": kind, "bottom": "c", "top": "a", **params},
            conv("d", "a", 8, group=8), {"name": "a2", "type": kind, "bottom": "d", "top": "a2", **params},
            {"name": "fc", "type": "InnerProduct", "bottom": "a2", "top": "fc", "num_output": 3},
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["fc", "target"], "top": "loss"}]}
        net = Net(s, seed=7)
        randomize(net, np.random.default_rng(7))
        return net
    fused, plain = build(), build()
    for name in ("c", "d"):
        layer = plain.layers[name]
        layer.fused_relu, layer.fused_relu_blob, layer.fused_act = False, None, None
    plain.layers["a"].fused = plain.layers["a2"].fused = False
    assert fused.layers["a"].fused and fused.layers["a2"].fused       # the depthwise one too, into its own top
    rng = np.random.default_rng(8)
    feed = {"data": rng.standard_normal((2, 4, 6, 6)).astype(np.float32) * 2,
            "target": rng.standard_normal((2, 3)).astype(np.float32)}
    for net in (fused, plain):
        net.set_phase("train")
        net.forward(**feed)
        net.backward()
    for name, p in plain.params.items():   # (the kernel's sigmoid and NumPy's differ in the last bits)
        close(fused.params[name].diff, p.diff, name)


def se_spec(act, in_place=True, pool_reads="act", depthwise=True, pool="ave"):
    """A squeeze-excitation block as torchvision's MobileNetV3 has it: depthwise conv -> BN ->
    activation -> x * gate(global average pool of x) -> 1x1 projection. pool_reads "act": the
    pooling reads the activation's output (the block); "conv": the BN's output before it."""
    kind, params = act
    act_top = "b" if in_place else "a"
    pooled = act_top if pool_reads == "act" else "b"
    return {"name": "se", "inputs": {"data": [8, 9, 11]}, "layers": [
        conv("dw", "data", 8, group=8 if depthwise else 1, bias=False), bn("b", "dw"),
        {"name": "act", "type": kind, "bottom": "b", "top": act_top, **params},
        {"name": "gap", "type": "Pooling", "bottom": pooled, "top": "gap", "pool": pool, "global_pooling": True},
        conv("fc1", "gap", 4, k=1), {"name": "r", "type": "ReLU", "bottom": "fc1", "top": "fc1"},
        conv("fc2", "fc1", 8, k=1), {"name": "g", "type": "HardSigmoid", "bottom": "fc2", "top": "gate"},
        {"name": "mul", "type": "Arithmetic", "bottom": [act_top, "gate"], "top": "se", "operation": "mul"},
        conv("proj", "se", 6, k=1)]}


@pytest.mark.parametrize("act, in_place", [(("HardSwish", {}), False), (("ReLU", {}), True), (("SiLU", {}), False)],
                         ids=["hardswish", "relu-in-place", "silu"])
def test_squeeze_excitation_pooling_is_done_by_the_depthwise_convolution(act, in_place, monkeypatch):
    """The pooling's step is fused into the depthwise convolution, which writes each plane's mean:
    the same floats as the pooling layer run apart (the same summation), the net as written within
    the tolerance, the pooled blob itself when asked for, at batch 1 and 3 and after a batch change."""
    from decaf.layers.pool import Pooling
    spec = se_spec(act, in_place)
    fast, plain = pair(spec)
    assert ("pooled", "gap", "dw") in kinds(fast)
    assert [s for s in fast.optimized_graph().steps if s.layer.name == "gap"][0].fused
    monkeypatch.setattr(Pooling, "means_of_bottom", lambda self: False)
    apart = Net.from_arrays(spec, fast.param_arrays(), optimize=True)
    assert not any(k == "pooled" for k, _, _ in kinds(apart))
    monkeypatch.undo()
    rng = np.random.default_rng(8)
    for batch in (1, 3, 1):
        x = rng.standard_normal((batch, 8, 9, 11)).astype(np.float32) * 2
        a, b, c = (n.forward(data=x, outputs=["proj", "gap"]) for n in (fast, apart, plain))
        np.testing.assert_array_equal(a["proj"], b["proj"])
        np.testing.assert_array_equal(a["gap"], b["gap"])
        close(a["proj"], c["proj"], "proj")
        close(a["gap"], c["gap"], "gap")
        x_act = plain.forward(data=x, outputs=["b" if in_place else "a"])["b" if in_place else "a"]
        close(a["gap"], x_act.astype(np.float64).mean(axis=(2, 3), keepdims=True), "gap vs the mean")
    shared = Net.from_arrays(spec, fast.param_arrays(), optimize=True).share_memory()
    np.testing.assert_array_equal(shared.forward(data=x, outputs=["proj"])["proj"], a["proj"])


@pytest.mark.parametrize("variant, pooled", [("pool-reads-before-the-activation", True), ("not-depthwise", False),
                                             ("max-pooling", False)])
def test_which_poolings_the_convolution_computes(variant, pooled):
    """Where the pooling reads the BN's output before the activation, that output has two readers
    (a Split): the activation stays a layer of its own, the convolution writes the pre-activation
    values last, and pools them. Not for a convolution that is not depthwise, nor for a global max
    pooling. The results equal the net as written either way."""
    spec = se_spec(("HardSwish", {}), in_place=False, pool_reads="conv" if variant.startswith("pool") else "act",
                   depthwise=variant != "not-depthwise", pool="max" if variant == "max-pooling" else "ave")
    fast, plain = pair(spec)
    assert any(k == "pooled" for k, _, _ in kinds(fast)) == pooled
    x = np.random.default_rng(9).standard_normal((2, 8, 9, 11)).astype(np.float32)
    a, c = fast.forward(data=x, outputs=["proj", "gap"]), plain.forward(data=x, outputs=["proj", "gap"])
    close(a["proj"], c["proj"], "proj")
    close(a["gap"], c["gap"], "gap")
