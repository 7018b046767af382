"""Helpers for the layer tests: a one-node ONNX model, and decaf against ONNX Runtime both ways."""
import numpy as np
import pytest

import decaf


def one_node_model(path, op, x_shape, attrs=None, consts=None, opset=17, y_shape=None):
    """Save an ONNX model of one node ``op`` reading "x" (then the ``consts``, initializers named by
    their keys, in order; '' for an omitted optional input) and writing "y"."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    consts = consts or {}
    inits = [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items() if v is not None]
    inputs = ["x"] + [name if consts[name] is not None else "" for name in consts]
    while inputs[-1] == "":        # trailing optional inputs are left out (ONNX Runtime crashes on them)
        inputs.pop()
    node = helper.make_node(op, inputs, ["y"], name="the_node", **(attrs or {}))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or x_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_ort(path, feeds):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def import_net(path):
    """The decaf net onnx_to_net makes of the file, with its weights."""
    from decaf.io.onnx_convert import onnx_to_net
    spec, arrays = onnx_to_net(path)
    net = decaf.Net(spec, init=False)
    net.load_params(arrays)
    return net, spec


def check_import(path, x, rtol=1e-5, atol=1e-6):
    """Import the model, run it on x and compare with ONNX Runtime; returns the decaf spec."""
    net, spec = import_net(path)
    (theirs,) = run_ort(path, {"x": x})
    ours = net.forward(x=x)[net.output_names[0]]
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)
    return spec


def check_export(net, path, feeds, rtol=1e-5, atol=1e-6, opset=13):
    """Export the net, run ONNX Runtime on feeds and compare every output with decaf's."""
    from decaf.io.onnx_convert import net_to_onnx
    net_to_onnx(net, path, opset=opset)
    theirs = run_ort(path, feeds)
    ours = net.forward(dict(feeds))
    for name, value in zip(net.output_names, theirs):
        np.testing.assert_allclose(ours[name], value, rtol=rtol, atol=atol)
    return path


def one_layer_net(layer, shape, seed=0):
    """A net of one layer (a spec dict without name/bottom/top) reading "x" of full shape ``shape``."""
    spec = {"name": "one", "inputs": {"x": list(shape[1:])},
            "layers": [dict({"name": "the_layer", "bottom": "x", "top": "y"}, **layer)]}
    return decaf.Net(spec, seed=seed)


def profile_entry(net, batch=2):
    """decaf profile's entry for the net's one layer."""
    from decaf.profile import profile
    (entry,) = profile(net, batch=batch, iters=1, warmup=0, progress=False).layers
    return entry


def assert_caffe_refuses(tmp_path, layer, shape):
    """Writing the one-layer net as Caffe raises the default refusal, naming the layer and its type."""
    from decaf.io.caffe import write_prototxt
    spec = {"name": "n", "inputs": {"x": list(shape[1:])},
            "layers": [dict({"name": "the_layer", "bottom": "x", "top": "y"}, **layer)]}
    with pytest.raises(ValueError) as info:
        write_prototxt(tmp_path / "n.prototxt", spec)
    assert str(info.value) == f"layer 'the_layer': decaf type {layer['type']!r} has no Caffe equivalent"


def assert_never_in_place(layer, shape):
    spec = {"name": "n", "inputs": {"x": list(shape[1:])},
            "layers": [dict({"name": "the_layer", "bottom": "x", "top": "x"}, **layer)]}
    with pytest.raises(decaf.SpecError, match="cannot run in place"):
        decaf.Net(spec)


def chain_model(path, nodes, x_shape, opset=13, outputs=("y",)):
    """Save an ONNX model of ``nodes`` (tuples (op, inputs, output, attrs)) reading "x"; ``outputs``
    are the graph outputs (of the shape of x)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    made = [helper.make_node(op, list(ins), [out], name=f"n{i}_{op}", **attrs)
            for i, (op, ins, out, attrs) in enumerate(nodes)]
    graph = helper.make_graph(made, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, x_shape) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
