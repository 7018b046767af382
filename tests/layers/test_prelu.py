"""PReLU: NumPy reference, finite differences for the input and the slopes (per channel and shared),
profile, ONNX PRelu (slope shapes) both ways against ONNX Runtime, Caffe PReLU both ways."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from layer_checks import check_export, check_import, one_layer_net, one_node_model, profile_entry

SHAPE = (2, 3, 4, 5)
SLOPES = {"filler": {"type": "uniform", "min": -0.5, "max": 0.8}}


def reference(x, slope, channel_axis=1):
    x = np.asarray(x, np.float64)
    a = np.asarray(slope, np.float64)
    if a.size > 1:
        a = a.reshape((-1,) + (1,) * (x.ndim - 1 - channel_axis))
    return np.where(x > 0, x, a * x)


def inputs(shape=SHAPE, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    x[np.abs(x) < 0.01] += 0.05                   # away from the kink
    return x.astype(np.float32)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [SHAPE, (4, 3)])
def test_forward_equals_reference(shared, shape):
    net = one_layer_net(dict({"type": "PReLU", "channel_shared": shared}, **SLOPES), shape)
    slope = net.params["the_layer.weight"].data
    assert slope.shape == ((1,) if shared else (3,))
    x = inputs(shape)
    np.testing.assert_allclose(net.forward(x=x)["y"], reference(x, slope), rtol=1e-6, atol=1e-7)


def test_default_slope_is_a_quarter():
    net = one_layer_net({"type": "PReLU"}, SHAPE)
    assert net.params["the_layer.weight"].data.tolist() == [0.25] * 3


@pytest.mark.parametrize("shared", [False, True])
def test_backward_equals_finite_differences(shared):
    layer = dict({"name": "p", "type": "PReLU", "channel_shared": shared}, **SLOPES)
    net = decaf.Net(layer_net_spec(layer, [SHAPE]), force_backward=True, seed=2)
    report = check_net(net, {"in0": inputs(seed=1)}, max_elements=120)
    assert report.passed, str(report)
    assert [r.name for r in report.results] == ["input in0", "param p.weight"]


def test_never_in_place_and_profile():
    with pytest.raises(decaf.SpecError, match="cannot run in place"):
        decaf.Net({"name": "n", "inputs": {"x": [3]},
                   "layers": [{"name": "p", "type": "PReLU", "bottom": "x", "top": "x"}]})
    entry = profile_entry(one_layer_net({"type": "PReLU"}, SHAPE))
    assert entry.group == "neuron" and entry.flops == 2 * 3 * 4 * 5 and entry.macs == 0


@pytest.mark.parametrize("slope_shape,shared", [((3, 1, 1), False), ((1, 3, 1, 1), False), ((1,), True),
                                                ((), True)])
def test_onnx_prelu_imports(tmp_path, slope_shape, shared):
    slope = np.random.default_rng(3).uniform(-0.5, 0.5, slope_shape).astype(np.float32)
    path = one_node_model(tmp_path / "p.onnx", "PRelu", ["N", 3, 4, 5], consts={"slope": slope}, opset=16)
    spec = check_import(path, inputs(seed=4))
    assert [(layer["type"], layer.get("channel_shared", False)) for layer in spec["layers"]] == [("PReLU", shared)]


def test_onnx_prelu_with_another_slope_shape_is_refused(tmp_path):
    from decaf.io.errors import DecafFormatError
    from decaf.io.onnx_convert import onnx_to_net
    path = one_node_model(tmp_path / "p.onnx", "PRelu", ["N", 3, 4, 5],
                          consts={"slope": np.full((5,), 0.1, np.float32)}, opset=16)   # one per column
    with pytest.raises(DecafFormatError, match=r"slope of shape \(5,\) on a 4-D input is not supported"):
        onnx_to_net(path)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [SHAPE, (4, 3)])
def test_onnx_export_matches_onnx_runtime(tmp_path, shared, shape):
    net = one_layer_net(dict({"type": "PReLU", "channel_shared": shared}, **SLOPES), shape, seed=5)
    check_export(net, tmp_path / "p.onnx", {"x": inputs(shape, seed=6)})


@pytest.mark.parametrize("shared", [False, True])
def test_caffe_round_trip(tmp_path, shared):
    from decaf.io.caffe import caffe_to_net, write_caffemodel, write_prototxt
    net = one_layer_net(dict({"type": "PReLU", "channel_shared": shared, "lr_mult": [2.0]}, **SLOPES), SHAPE, seed=7)
    spec = {"name": "n", "inputs": {"x": list(SHAPE[1:])},
            "layers": [{"name": "the_layer", "type": "PReLU", "bottom": "x", "top": "y",
                        "channel_shared": shared, "lr_mult": [2.0]}]}
    arrays = net.param_arrays()
    write_prototxt(tmp_path / "n.prototxt", spec)
    write_caffemodel(tmp_path / "n.caffemodel", spec, arrays)
    text = (tmp_path / "n.prototxt").read_text()
    assert 'type: "PReLU"' in text and ("channel_shared: true" in text) == shared
    spec2, arrays2, _ = caffe_to_net(tmp_path / "n.prototxt", tmp_path / "n.caffemodel")
    (layer,) = spec2["layers"]
    assert (layer["type"], layer["channel_shared"], layer["lr_mult"]) == ("PReLU", shared, [2.0])
    np.testing.assert_array_equal(arrays2["the_layer.weight"], arrays["the_layer.weight"])
    with pytest.raises(ValueError, match="'PReLU' has no V1"):
        write_prototxt(tmp_path / "v1.prototxt", spec, v1=True)
