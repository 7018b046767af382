"""PReLU: a ReLU whose negative slope is learned, one per channel (or one shared).

Parameters: channel_shared (False: a slope per channel of axis 1; True: one slope), filler
(constant 0.25, Caffe's and PyTorch's start). The slope is the parameter "weight", (C,) or (1,).

    forward:  y = x if x > 0 else a_c x
    backward: dx = dy if x > 0 else a_c dy
              da_c = sum of dy * min(x, 0) over the batch and every axis but the channel one
                     (over everything when channel_shared)

da needs the bottom, so the layer never runs in place. ONNX: PRelu with a slope of one value or
one per channel of axis 1 ((C,), (C, 1, 1), (1, C, 1, 1)...) is read; decaf writes PRelu with
the slope shaped (C, 1, ..., 1). Caffe: PReLU (prelu_param.channel_shared) both ways.
"""
import numpy as np

from .. import fillers
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register


@register
class PReLU(Layer):
    type_name = "PReLU"
    group = "neuron"
    PARAMS = {"channel_shared": False, "filler": {"type": "constant", "value": 0.25}}
    gradcheck_case = ({"filler": {"type": "uniform", "min": -0.5, "max": 0.8}}, [(2, 3, 3, 3)])

    def setup(self, bottom_shapes, fill_rng):
        shape = bottom_shapes[0]
        if not self.p["channel_shared"] and len(shape) < 2:
            raise self.shape_error("a slope per channel needs a channel axis", ">= 2-D", shape)
        self.slope = self.add_param("weight", (1,) if self.p["channel_shared"] else (shape[1],), 0)
        fillers.fill(self.slope.data, self.p["filler"], fill_rng)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if not self.p["channel_shared"] and (len(shape) < 2 or shape[1] != self.slope.shape[0]):
            raise self.shape_error("channel count", self.slope.shape[0], shape)
        self.view = (1,) if self.p["channel_shared"] else (-1,) + (1,) * (len(shape) - 2)
        self.sum_axes = tuple(i for i in range(len(shape)) if self.p["channel_shared"] or i != 1)
        return [shape]

    def summary(self):
        return "shared" if self.p["channel_shared"] else ""

    def ops(self, bottom_shapes, top_shapes):
        return 2 * per_image(top_shapes[0])           # compare, multiply

    def forward(self, bottom, top):
        x = bottom[0].data
        np.multiply(x, np.where(x > 0, 1, self.slope.data.reshape(self.view)).astype(x.dtype), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        self.slope.diff[...] = np.sum(dy * np.minimum(x, 0), axis=self.sum_axes).reshape(self.slope.shape)
        if propagate_down[0]:
            np.multiply(dy, np.where(x > 0, 1, self.slope.data.reshape(self.view)).astype(x.dtype),
                        out=bottom[0].diff)

    def to_onnx(self, g):
        view = (1,) if self.p["channel_shared"] else (-1,) + (1,) * (len(g.input_shapes[0]) - 2)
        slope = g.const(f"{self.name}.weight", g.params["weight"].reshape(view))
        g.node("PRelu", [g.inputs[0], slope], g.outputs, self.name)

    @classmethod
    def to_caffe(cls, p, w):
        shared = bool(p["channel_shared"])
        w.add("PReLU", ["weight"], multipliers=True, **({"prelu_param": {"channel_shared": True}} if shared else {}))


@onnx_importer("PRelu")
def _prelu_from_onnx(imp, node):
    """The slope broadcasts to X from the right: one value, or a value per channel of axis 1."""
    slope = imp.need_const(node, 1, "the slope")
    if slope.size == 1:
        imp.add(node, "PReLU", [node.input[0]], node.output[0], {"weight": slope.reshape(1)}, channel_shared=True)
        return
    rank = imp.rank(node.input[0], node, "a slope per channel")
    aligned = (1,) * (rank - slope.ndim) + slope.shape
    if slope.ndim > rank or rank < 2 or any(d != 1 for i, d in enumerate(aligned) if i != 1):
        raise imp.fail(f"node {imp.label(node)}: a slope of shape {slope.shape} on a {rank}-D input is not "
                       f"supported (decaf takes one slope, or one per channel of axis 1)")
    imp.add(node, "PReLU", [node.input[0]], node.output[0], {"weight": slope.reshape(-1)})


@caffe_importer("PReLU")
def _prelu_from_caffe(ctx, layer):
    p = layer.param("prelu_param")
    ctx.weights(["weight"])
    return {"type": "PReLU", "channel_shared": bool(p.get("channel_shared", False)), **ctx.multipliers()}
