"""Read the exact GELU that exporters write as arithmetic back as one GELU layer.

Before ONNX opset 20 has a Gelu operator, PyTorch (and decaf, docs in layers/gelu.py) write
GELU(x) = x (1 + erf(x / sqrt 2)) / 2 as five nodes, which the importer makes five layers::

    x -> Scale (1 / sqrt 2) -> Erf -> Scale (1, bias 1) -+-> Eltwise prod (with x) -> Scale (1/2) -> y
    x ---------------------------------------------------+

Each reads and writes the whole tensor (ConvNeXt's GELUs are its largest tensors: four times the
block's width). ``fuse_gelu_chains`` finds that chain, whose constants are one value each (a
Scale's weight and bias broadcast), whose inner values nothing else reads and no output of the
net is, and puts one ``GELU`` layer (approximate "none") in its place, writing the chain's top.
"""
import math

import numpy as np

__all__ = ["fuse_gelu_chains"]


def _names(value):
    return [value] if isinstance(value, str) else list(value)


def _constant(arrays, name, key, want, tol=1e-6):
    """Whether parameter ``key`` of layer ``name`` is the value ``want`` everywhere."""
    v = arrays.get(f"{name}.{key}")
    return v is not None and v.size > 0 and np.allclose(v, want, rtol=tol, atol=0)


def _scale(layer, arrays, weight, bias):
    """A Scale layer multiplying by ``weight`` and adding ``bias`` (None: no bias term)."""
    if layer is None or layer["type"] != "Scale" or not _constant(arrays, layer["name"], "weight", weight):
        return False
    if bias is None:
        return not layer.get("bias_term", False)
    return bool(layer.get("bias_term", False)) and _constant(arrays, layer["name"], "bias", bias)


def fuse_gelu_chains(layers, arrays, keep=()):
    """Replace each GELU chain in ``layers`` (a spec's layer list) by one GELU layer, in place;
    the chain's parameters are dropped from ``arrays``. ``keep``: blobs that must stay (the net's
    outputs). Returns the number of chains fused."""
    readers = {}
    for layer in layers:
        for b in _names(layer["bottom"]):
            readers.setdefault(b, []).append(layer)
    keep = set(keep)

    def only(blob, layer_type=None):
        """The one reader of ``blob`` (None when several, none, or blob is kept)."""
        users = readers.get(blob, [])
        if len(users) != 1 or blob in keep or (layer_type and users[0]["type"] != layer_type):
            return None
        return users[0]

    fused, gone = 0, set()
    for div in list(layers):
        if id(div) in gone or not _scale(div, arrays, 1 / math.sqrt(2), None):
            continue
        x = _names(div["bottom"])[0]
        erf = only(_names(div["top"])[0], "Erf")
        add = erf and only(_names(erf["top"])[0])
        if not _scale(add, arrays, 1.0, 1.0):
            continue
        mul = only(_names(add["top"])[0], "Eltwise")
        if (mul is None or mul.get("operation") != "prod" or mul.get("coeff") is not None
                or sorted(_names(mul["bottom"])) != sorted([x, _names(add["top"])[0]])):
            continue
        half = only(_names(mul["top"])[0])
        if not _scale(half, arrays, 0.5, None):
            continue
        chain = [div, erf, add, mul, half]
        gelu = {"name": half["name"], "type": "GELU", "bottom": x, "top": half["top"], "approximate": "none"}
        layers[layers.index(half)] = gelu
        for layer in chain:
            gone.add(id(layer))
            for key in [k for k in arrays if k.startswith(layer["name"] + ".")]:
                del arrays[key]
        fused += 1
    layers[:] = [layer for layer in layers if id(layer) not in gone]
    return fused
