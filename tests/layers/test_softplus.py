"""Softplus and Softsign: NumPy references, finite differences (also in place), profile, ONNX both
ways against ONNX Runtime, Caffe refusal."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import (assert_caffe_refuses, check_export, check_import, one_layer_net, one_node_model,
                          profile_entry)

SHAPE = (2, 3, 4, 5)
REFERENCES = {
    "Softplus": lambda x: np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30)))),
    "Softsign": lambda x: x / (1 + np.abs(x)),
}


def inputs(seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(SHAPE) * scale).astype(np.float32)


@pytest.mark.parametrize("type_name", sorted(REFERENCES))
def test_forward_equals_reference(type_name):
    x = inputs()
    x.flat[:3] = [-100.0, 100.0, 0.0]
    y = one_layer_net({"type": type_name}, SHAPE).forward(x=x)["y"]
    np.testing.assert_allclose(y, REFERENCES[type_name](x.astype(np.float64)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("type_name", sorted(REFERENCES))
def test_backward_equals_finite_differences(type_name, in_place):
    spec = layer_net_spec({"name": "a", "type": type_name}, [SHAPE])
    if in_place:
        spec["layers"].insert(0, {"name": "pre", "type": "Scale", "bottom": "in0", "top": "mid",
                                  "filler": {"type": "constant", "value": 1.5}})
        spec["layers"][1].update(bottom="mid", top="mid")
    net = decaf.Net(spec, force_backward=True)
    report = check_net(net, {"in0": inputs(1, 2.0)}, max_elements=120)
    assert report.passed, str(report)


@pytest.mark.parametrize("type_name,ops", [("Softplus", 4), ("Softsign", 3)])
def test_profile(type_name, ops):
    entry = profile_entry(one_layer_net({"type": type_name}, SHAPE))
    assert entry.group == "neuron" and entry.flops == ops * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("type_name", sorted(REFERENCES))
def test_onnx_import_and_export(tmp_path, type_name):
    path = one_node_model(tmp_path / "a.onnx", type_name, ["N", 3, 4, 5], opset=13)
    assert [layer["type"] for layer in check_import(path, inputs(2))["layers"]] == [type_name]
    check_export(one_layer_net({"type": type_name}, SHAPE), tmp_path / "out.onnx", {"x": inputs(3)})


@pytest.mark.parametrize("type_name", sorted(REFERENCES))
def test_caffe_refuses_them(tmp_path, type_name):
    assert_caffe_refuses(tmp_path, {"type": type_name}, SHAPE)


def test_onnx_softplus_tanh_mul_imports_as_mish(tmp_path):
    """PyTorch's Mish before opset 18: Softplus, Tanh, Mul by x."""
    from layer_checks import chain_model
    path = chain_model(tmp_path / "m.onnx", [("Softplus", ["x"], "s", {}), ("Tanh", ["s"], "t", {}),
                                             ("Mul", ["t", "x"], "y", {})], ["N", 3, 4, 5])
    spec = check_import(path, inputs(4))
    assert [layer["type"] for layer in spec["layers"]] == ["Mish"]


def test_onnx_softplus_tanh_with_another_reader_stays_apart(tmp_path):
    from layer_checks import chain_model, import_net, run_ort
    path = chain_model(tmp_path / "m.onnx", [("Softplus", ["x"], "s", {}), ("Tanh", ["s"], "t", {}),
                                             ("Mul", ["t", "x"], "y", {}), ("Relu", ["t"], "z", {})],
                       ["N", 3, 4, 5], outputs=("y", "z"))
    net, spec = import_net(path)
    assert [layer["type"] for layer in spec["layers"]] == ["Softplus", "Tanh", "Eltwise", "ReLU"]
    x = inputs(5)
    ours = net.forward({"x": x}, outputs=["y", "z"])
    for name, theirs in zip(("y", "z"), run_ort(path, {"x": x})):
        np.testing.assert_allclose(ours[name], theirs, rtol=1e-6, atol=1e-6)
