"""HardSigmoid: NumPy reference, finite differences (also in place), profile, ONNX both ways against
ONNX Runtime, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from decaf.profile import profile
from layer_checks import check_export, check_import, one_layer_net, one_node_model


def reference(x, alpha, beta):
    return np.minimum(np.maximum(alpha * np.asarray(x, np.float64) + beta, 0.0), 1.0)


def away_from_kinks(shape, alpha, beta, seed=0):
    """Uniform in [-5, 5], at least 0.01 from where alpha x + beta is 0 or 1."""
    x = np.random.default_rng(seed).uniform(-5, 5, shape)
    for kink in (-beta / alpha, (1 - beta) / alpha):
        x[np.abs(x - kink) < 0.01] += 0.05
    return x


@pytest.mark.parametrize("alpha,beta", [(0.2, 0.5), (1 / 6, 0.5), (0.7, -0.3)])
def test_forward_equals_reference(alpha, beta):
    x = away_from_kinks((2, 3, 4, 5), alpha, beta).astype(np.float32)
    net = one_layer_net({"type": "HardSigmoid", "alpha": alpha, "beta": beta}, x.shape)
    np.testing.assert_allclose(net.forward(x=x)["y"], reference(x, alpha, beta), rtol=1e-6, atol=1e-7)
    assert reference([-10.0, 0.0, 10.0], 0.2, 0.5).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("in_place", [False, True])
def test_backward_equals_finite_differences(in_place):
    layer = {"name": "hs", "type": "HardSigmoid", "alpha": 0.3, "beta": 0.4}
    if in_place:
        layer.update(bottom="in0", top="in0_act")
    spec = layer_net_spec(layer, [(2, 3, 4, 5)])
    if in_place:       # a producer writes the blob the activation then overwrites
        spec["layers"].insert(0, {"name": "pre", "type": "Scale", "bottom": "in0", "top": "mid",
                                  "filler": {"type": "constant", "value": 1.5}})
        spec["layers"][1].update(bottom="mid", top="mid")
    net = decaf.Net(spec, force_backward=True)
    report = check_net(net, {"in0": away_from_kinks((2, 3, 4, 5), 0.3 * 1.5, 0.4, seed=1)}, max_elements=120)
    assert report.passed, str(report)


def test_bad_alpha_is_refused():
    with pytest.raises(decaf.SpecError, match="alpha must be > 0"):
        one_layer_net({"type": "HardSigmoid", "alpha": 0.0}, (1, 3))


def test_profile_counts_it_as_a_neuron():
    result = profile(one_layer_net({"type": "HardSigmoid"}, (2, 3, 4, 5)), batch=2, iters=1, warmup=0,
                     progress=False)
    (entry,) = result.layers
    assert entry.group == "neuron" and entry.flops == 4 * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("attrs", [{}, {"alpha": 1 / 6, "beta": 0.5}, {"alpha": 0.5, "beta": 0.1}])
def test_onnx_import_and_export_match_onnx_runtime(tmp_path, attrs):
    x = away_from_kinks((2, 3, 4, 5), attrs.get("alpha", 0.2), attrs.get("beta", 0.5), seed=2).astype(np.float32)
    path = one_node_model(tmp_path / "in.onnx", "HardSigmoid", ["N", 3, 4, 5], attrs, opset=13)
    spec = check_import(path, x)
    assert [layer["type"] for layer in spec["layers"]] == ["HardSigmoid"]
    net = one_layer_net(spec["layers"][0] | {"name": "the_layer", "bottom": "x", "top": "y"}, x.shape)
    check_export(net, tmp_path / "out.onnx", {"x": x})


def test_caffe_refuses_it_by_name(tmp_path):
    from decaf.io.caffe import write_prototxt
    spec = {"name": "n", "inputs": {"x": [3]}, "layers": [{"name": "g", "type": "HardSigmoid", "bottom": "x",
                                                            "top": "y"}]}
    with pytest.raises(ValueError, match="'g': decaf type 'HardSigmoid' has no Caffe equivalent"):
        write_prototxt(tmp_path / "n.prototxt", spec)


HARD_SWISH = {"alpha": 1 / 6, "beta": 0.5}


@pytest.mark.parametrize("order", ["x_first", "gate_first"])
def test_onnx_hardsigmoid_times_input_imports_as_hardswish(tmp_path, order):
    """PyTorch's Hardswish before opset 14 (and decaf's own export): HardSigmoid(1/6, 1/2), Mul by x."""
    from layer_checks import chain_model
    mul_in = ["x", "g"] if order == "x_first" else ["g", "x"]
    path = chain_model(tmp_path / "hs.onnx", [("HardSigmoid", ["x"], "g", HARD_SWISH), ("Mul", mul_in, "y", {})],
                       ["N", 3, 4, 5])
    x = away_from_kinks((2, 3, 4, 5), 1 / 6, 0.5, seed=7).astype(np.float32)
    spec = check_import(path, x)
    assert [layer["type"] for layer in spec["layers"]] == ["HardSwish"]


@pytest.mark.parametrize("case", ["other_alpha", "gate_is_an_output", "times_another_tensor"])
def test_onnx_hardsigmoid_times_input_stays_apart_otherwise(tmp_path, case):
    from layer_checks import chain_model, import_net, run_ort
    attrs, outputs = (dict(HARD_SWISH, alpha=0.2) if case == "other_alpha" else HARD_SWISH), ("y",)
    nodes = [("HardSigmoid", ["x"], "g", attrs), ("Mul", ["x", "g"], "y", {})]
    if case == "gate_is_an_output":
        outputs = ("y", "g")
    if case == "times_another_tensor":
        nodes = [("Relu", ["x"], "r", {})] + nodes[:1] + [("Mul", ["r", "g"], "y", {})]
    path = chain_model(tmp_path / "hs.onnx", nodes, ["N", 3, 4, 5], outputs=outputs)
    net, spec = import_net(path)
    assert "HardSigmoid" in [layer["type"] for layer in spec["layers"]]
    x = away_from_kinks((2, 3, 4, 5), attrs["alpha"], 0.5, seed=8).astype(np.float32)
    ours = net.forward({"x": x}, outputs=list(outputs))
    for name, theirs in zip(outputs, run_ort(path, {"x": x})):
        np.testing.assert_allclose(ours[name], theirs, rtol=1e-6, atol=1e-6)


def test_hardswish_exported_by_decaf_imports_back_as_hardswish(tmp_path):
    from layer_checks import import_net
    from decaf.io.onnx_convert import net_to_onnx
    net_to_onnx(one_layer_net({"type": "HardSwish"}, (2, 3, 4, 5)), tmp_path / "hs.onnx")
    assert [layer["type"] for layer in import_net(tmp_path / "hs.onnx")[1]["layers"]] == ["HardSwish"]
