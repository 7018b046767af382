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
