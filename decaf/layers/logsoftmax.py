"""LogSoftmax over the channel axis (axis 1): the log of Softmax, computed without forming it.

    forward:  y_i = x_i - m - log sum_j exp(x_j - m),   m = max_j x_j
    backward: dx_i = dy_i - exp(y_i) sum_j dy_j          (exp(y) is the softmax)

Backward needs only the top, so the layer may run in place. ONNX: LogSoftmax both ways, over
axis 1 only (before opset 13 ONNX flattens from the axis, the same when the rest is 1s). Caffe has
no LogSoftmax layer.
"""
import numpy as np

from ..interop import onnx_importer
from ..layer import Layer, per_image, register


@register
class LogSoftmax(Layer):
    type_name = "LogSoftmax"
    group = "neuron"
    inplace_ok = True
    gradcheck_case = ({}, [(3, 5)])

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2:
            raise self.shape_error("the bottom needs a channel axis", ">= 2-D", bottom_shapes[0])
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 5 * per_image(top_shapes[0])         # max, subtract, exp, sum, subtract the log

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        shifted = x - x.max(axis=1, keepdims=True)
        np.subtract(shifted, np.log(np.exp(shifted).sum(axis=1, keepdims=True)), out=y)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = dy - np.exp(y) * dy.sum(axis=1, keepdims=True)

    def to_onnx(self, g):
        g.node("LogSoftmax", g.inputs, g.outputs, self.name, axis=1)


@onnx_importer("LogSoftmax")
def _logsoftmax_from_onnx(imp, node):
    a = imp.attrs(node)
    r = imp.rank(node.input[0], node, "LogSoftmax")
    axis = int(a.get("axis", 1 if imp.opset < 13 else -1))
    axis = axis + r if axis < 0 else axis
    trailing_ones = all(d == 1 for d in imp.shape(node.input[0])[2:])
    if axis != 1 or (imp.opset < 13 and r > 2 and not trailing_ones):
        raise imp.fail(f"node {imp.label(node)}: LogSoftmax over axis {axis} of a {r}-D input is not supported "
                       f"(decaf takes it over the channel axis 1)")
    imp.add(node, "LogSoftmax", [node.input[0]], node.output[0])
