"""ELU and SELU: NumPy references, finite differences (also in place), profile, ONNX both ways
against ONNX Runtime, bad alpha, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, check_export, check_import, one_layer_net, one_node_model,
                          profile_entry)

SHAPE = (2, 3, 4, 5)
SELU_ALPHA, SELU_GAMMA = 1.6732632423543772, 1.0507009873554805      # the SELU paper's constants


def reference(x, alpha=1.0, gamma=1.0):
    x = np.asarray(x, np.float64)
    return gamma * np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1))


def inputs(seed=0, scale=3.0):
    x = np.random.default_rng(seed).standard_normal(SHAPE) * scale
    x[np.abs(x) < 0.01] += 0.05
    return x.astype(np.float32)


@pytest.mark.parametrize("layer,alpha,gamma", [({"type": "ELU"}, 1.0, 1.0), ({"type": "ELU", "alpha": 0.3}, 0.3, 1.0),
                                               ({"type": "SELU"}, SELU_ALPHA, SELU_GAMMA)])
def test_forward_equals_reference(layer, alpha, gamma):
    x = inputs()
    x.flat[:2] = [-100.0, 100.0]
    y = one_layer_net(layer, SHAPE).forward(x=x)["y"]
    np.testing.assert_allclose(y, reference(x, alpha, gamma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("layer", [{"type": "ELU", "alpha": 0.3}, {"type": "SELU"}], ids=["elu", "selu"])
def test_backward_equals_finite_differences(layer, in_place):
    spec = layer_net_spec(dict(layer, name="a"), [SHAPE])
    if in_place:
        spec["layers"].insert(0, {"name": "pre", "type": "Scale", "bottom": "in0", "top": "mid",
                                  "filler": {"type": "constant", "value": 1.5}})
        spec["layers"][1].update(bottom="mid", top="mid")
    net = decaf.Net(spec, force_backward=True)
    report = check_net(net, {"in0": inputs(1, 2.0)}, max_elements=120)
    assert report.passed, str(report)


def test_bad_alpha_is_refused():
    with pytest.raises(decaf.SpecError, match="alpha must be > 0"):
        one_layer_net({"type": "ELU", "alpha": -1.0}, SHAPE)
    with pytest.raises(decaf.SpecError, match="gamma must be > 0"):
        one_layer_net({"type": "SELU", "gamma": 0.0}, SHAPE)


def test_profile():
    for t in ("ELU", "SELU"):
        entry = profile_entry(one_layer_net({"type": t}, SHAPE))
        assert entry.group == "neuron" and entry.flops == 4 * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("op,attrs,expected", [("Elu", {}, ("ELU", {"alpha": 1.0})),
                                               ("Elu", {"alpha": 0.5}, ("ELU", {"alpha": 0.5})),
                                               ("Selu", {}, ("SELU", {})),
                                               ("Selu", {"alpha": 1.5, "gamma": 2.0}, ("SELU", {"alpha": 1.5,
                                                                                               "gamma": 2.0}))])
def test_onnx_import_and_export(tmp_path, op, attrs, expected):
    path = one_node_model(tmp_path / "a.onnx", op, ["N", 3, 4, 5], attrs, opset=13)
    (layer,) = check_import(path, inputs(2))["layers"]
    assert layer["type"] == expected[0]
    assert {k: layer[k] for k in expected[1]} == pytest.approx(expected[1])
    net = one_layer_net({k: v for k, v in layer.items() if k not in ("name", "bottom", "top")}, SHAPE)
    check_export(net, tmp_path / "out.onnx", {"x": inputs(3)})


def test_caffe_refuses_them(tmp_path):
    assert_caffe_refuses(tmp_path, {"type": "ELU"}, SHAPE)
    assert_caffe_refuses(tmp_path, {"type": "SELU"}, SHAPE)
