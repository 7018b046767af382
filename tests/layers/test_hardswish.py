"""HardSwish: the math against a NumPy reference and finite differences, and its appearance in every
place decaf asks a layer type (profile, decaf gradcheck, ONNX both ways, Caffe) with no edit outside
its module."""
import numpy as np
import pytest

import decaf
from decaf.gradcheck import check_net, layer_net_spec
from decaf.profile import profile


def reference(x):
    """x * relu6(x + 3) / 6, written independently of the layer (float64)."""
    x = np.asarray(x, np.float64)
    return x * np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0


def net_spec(shape=(3, 4, 5)):
    return {"name": "hs", "inputs": {"data": list(shape)},
            "layers": [{"name": "hs", "type": "HardSwish", "bottom": "data", "top": "y"}]}


def inputs_away_from_kinks(shape, seed=0):
    """Uniform in [-5, 5], each value at least 0.01 from the kinks at -3 and 3."""
    x = np.random.default_rng(seed).uniform(-5, 5, shape)
    for kink in (-3.0, 3.0):
        near = np.abs(x - kink) < 0.01
        x[near] += 0.05
    return x


def test_forward_equals_reference():
    x = inputs_away_from_kinks((2, 3, 4, 5)).astype(np.float32)
    y = decaf.Net(net_spec()).forward(data=x)["y"]
    np.testing.assert_allclose(y, reference(x), rtol=1e-6, atol=1e-6)
    assert reference([-4.0, -1.5, 0.0, 4.0]).tolist() == [0.0, -0.375, 0.0, 4.0]   # the fixed points


def test_backward_equals_finite_differences():
    net = decaf.Net(layer_net_spec({"name": "hs", "type": "HardSwish"}, [(2, 3, 4, 5)]), force_backward=True)
    report = check_net(net, {"in0": inputs_away_from_kinks((2, 3, 4, 5), seed=1)}, max_elements=120)
    assert report.passed, str(report)


def test_never_in_place():
    spec = net_spec()
    spec["layers"][0]["top"] = "data"
    with pytest.raises(decaf.SpecError, match="cannot run in place"):
        decaf.Net(spec)


def test_profile_counts_it_as_a_neuron():
    result = profile(decaf.Net(net_spec()), batch=2, iters=1, warmup=0, progress=False)
    (entry,) = result.layers
    assert entry.group == "neuron" and entry.flops == 4 * 3 * 4 * 5 and entry.macs == 0


def test_decaf_gradcheck_command(capsys):
    from decaf.cli import main
    assert main(["gradcheck", "HardSwish"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_onnx_export_matches_onnx_runtime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from decaf.io.onnx_convert import net_to_onnx
    net = decaf.Net(net_spec())
    net_to_onnx(net, tmp_path / "hs.onnx")
    x = inputs_away_from_kinks((2, 3, 4, 5)).astype(np.float32)
    (theirs,) = ort.InferenceSession(str(tmp_path / "hs.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"data": x})
    np.testing.assert_allclose(net.forward(data=x)["y"], theirs, rtol=1e-5, atol=1e-6)


def test_onnx_hardswish_node_imports(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from decaf.io.onnx_convert import onnx_to_net
    graph = helper.make_graph(
        [helper.make_node("HardSwish", ["x"], ["y"], name="act")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, str(tmp_path / "hs.onnx"))
    spec, arrays = onnx_to_net(tmp_path / "hs.onnx")
    assert [layer["type"] for layer in spec["layers"]] == ["HardSwish"] and not arrays
    x = inputs_away_from_kinks((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(decaf.Net(spec).forward(x=x)["y"], reference(x), rtol=1e-6, atol=1e-6)


def test_caffe_refuses_it_by_name(tmp_path):
    from decaf.io.caffe import write_prototxt
    with pytest.raises(ValueError, match="'hs': decaf type 'HardSwish' has no Caffe equivalent"):
        write_prototxt(tmp_path / "hs.prototxt", net_spec())
