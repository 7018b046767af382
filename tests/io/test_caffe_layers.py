"""Every registered layer type either maps to Caffe both ways or refuses by name (issue 11).

The mappings live in the layer modules (``to_caffe`` and ``@caffe_importer``); these tests walk
the registry, so a new layer type is checked here without being listed.
"""
import numpy as np
import pytest

import decaf
import decaf.layers  # noqa: F401  (registers every type)
from decaf.commands.gradcheck import layer_case
from decaf.interop import CAFFE_IMPORTERS
from decaf.io.caffe import caffe_to_net, write_caffemodel, write_prototxt
from decaf.layer import LAYERS, Layer


def one_layer_net(type_name):
    """(spec, inputs, arrays) for a net holding one layer of this type, with random parameters."""
    layer, shapes, label_classes = layer_case(type_name, None, None)
    bottoms = layer.get("bottom") or [f"in{i}" for i in range(len(shapes))]
    layer = dict(layer, bottom=bottoms, top=layer["name"] + "_out")
    spec = {"name": "one", "inputs": {b: list(s[1:]) for b, s in zip(bottoms, shapes)}, "layers": [layer]}
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal(s).astype(np.float32) for b, s in zip(bottoms, shapes)}
    if label_classes is not None:
        inputs[bottoms[1]] = rng.integers(0, label_classes, shapes[1]).astype(np.float32)
    net = decaf.Net(spec, seed=1)
    arrays = {}
    for name, value in net.param_arrays().items():   # positive everywhere a variance could be
        arrays[name] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    return spec, inputs, arrays


def run(spec, arrays, inputs):
    net = decaf.Net(spec, init=False)
    net.load_params(arrays)
    out = net.forward(**inputs)
    assert len(out) == 1, out.keys()
    return next(iter(out.values()))


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
@pytest.mark.parametrize("type_name", sorted(LAYERS))
def test_every_type_round_trips_or_refuses(type_name, v1, tmp_path):
    spec, inputs, arrays = one_layer_net(type_name)
    name = spec["layers"][0]["name"]
    proto, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    try:
        write_prototxt(proto, spec, v1=v1)
        write_caffemodel(model, spec, arrays, v1=v1)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"layer {name!r}: "), message
        if v1 and "V1" in message:                           # no legacy form (BatchNorm, Scale, Reshape)
            return
        # a type that writes itself must manage its own gradcheck case; the others refuse plainly
        assert LAYERS[type_name].to_caffe.__func__ is Layer.to_caffe.__func__, message
        assert message == f"layer {name!r}: decaf type {type_name!r} has no Caffe equivalent"
        return
    spec2, arrays2, _ = caffe_to_net(proto, model)
    assert spec2["inputs"] == spec["inputs"]
    # the weights arrive bit for bit (under their new names when the layer became two, BatchNorm + Scale)
    assert len(arrays2) == len(arrays)
    for key, value in arrays.items():
        assert any(v.shape == value.shape and np.array_equal(v, value) for v in arrays2.values()), key
    before, after = run(spec, arrays, inputs), run(spec2, arrays2, inputs)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)


def test_refusal_names_layer_and_type(tmp_path):
    spec = {"name": "n", "inputs": {"data": [3, 4, 4]},
            "layers": [{"name": "clip1", "type": "Clip", "bottom": "data", "top": "c"}]}
    with pytest.raises(ValueError) as info:
        write_prototxt(tmp_path / "n.prototxt", spec)
    assert str(info.value) == "layer 'clip1': decaf type 'Clip' has no Caffe equivalent"


def test_every_importer_makes_a_registered_type():
    """Each Caffe type decaf reads becomes a decaf type the writer maps back to the same Caffe type
    (TanH -> Tanh -> TanH), so reading then writing keeps the file's layer types."""
    from decaf.io.caffe import CaffeReader, CaffeWriter

    class CaffeLayer:                       # the smallest layer an importer accepts
        def __init__(self, t):
            self.name, self.type, self.bottom, self.top = "x", t, ["a"], ["b"]
            self.lr_mult = self.decay_mult = None

        def param(self, key):
            required = {"convolution_param": {"num_output": 2, "kernel_size": 1},
                        "inner_product_param": {"num_output": 2}, "pooling_param": {"kernel_size": 2},
                        "reshape_param": {"shape": {"dim": [0, -1]}}}
            return required.get(key, {})

    for caffe_type, importer in sorted(CAFFE_IMPORTERS.items()):
        layer = CaffeLayer(caffe_type)
        d = importer(CaffeReader("test", layer), layer)
        assert d["type"] in LAYERS, (caffe_type, d)
        w = CaffeWriter({"name": "x", "bottom": "a", "top": "b", **d})
        cls = LAYERS[d["type"]]
        cls.to_caffe({**cls.PARAMS, "name": "x", **d}, w)
        assert w.layers[0][0]["type"] == caffe_type, (caffe_type, w.layers)
