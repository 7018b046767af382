"""Softmax over the channel axis (axis 1).

    forward:  y_i = exp(x_i - max x) / sum_j exp(x_j - max x)
    backward: dx_i = y_i (dy_i - sum_j dy_j y_j)
"""
import numpy as np

from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register


def softmax(x, out):
    """Numerically stable softmax of ``x`` along axis 1 into ``out``."""
    np.subtract(x, x.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


@register
class Softmax(Layer):
    type_name = "Softmax"
    group = "neuron"
    roles = frozenset({"probabilities"})
    gradcheck_case = ({}, [(3, 5)])

    def ops(self, bottom_shapes, top_shapes):
        return 5 * per_image(top_shapes[0])

    @classmethod
    def to_caffe(cls, p, w):
        w.add("Softmax")

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottom, top):
        softmax(bottom[0].data, top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = y * (dy - (dy * y).sum(axis=1, keepdims=True))

    def to_onnx(self, g):
        g.node("Softmax", g.inputs, g.outputs, self.name, axis=1)


@onnx_importer("Softmax")
def _softmax_from_onnx(imp, node):
    """Only over axis 1; before opset 13 ONNX flattens from the axis, the same when the rest is 1s."""
    a = imp.attrs(node)
    r = imp.rank(node.input[0], node, "Softmax")
    axis = int(a.get("axis", 1 if imp.opset < 13 else -1))
    if axis < 0:
        axis += r
    trailing_ones = all(d == 1 for d in imp.shape(node.input[0])[2:])
    if axis != 1 or (imp.opset < 13 and r > 2 and not trailing_ones):
        raise imp.fail(f"node {imp.label(node)}: Softmax over axis {axis} of a {r}-D input is "
                       f"not supported (decaf takes the softmax over the channel axis 1)")
    imp.add(node, "Softmax", [node.input[0]], node.output[0])


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("Softmax")
def _softmax_from_caffe(ctx, layer):
    ctx.axis_one(layer.param("softmax_param").get("axis"), "softmax axis")
    return {"type": "Softmax"}
