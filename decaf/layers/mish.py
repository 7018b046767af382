"""Mish: x times the tanh of its softplus.

    forward:  sp = log(1 + exp(x));  t = tanh(sp);  y = x t
    backward: dy/dx = t + x (1 - t^2) sigmoid(x)          (d sp / dx = sigmoid(x))

Not monotonic, so backward needs the bottom: never in place. ONNX has Mish from opset 18; decaf
writes it from opset 18, and Softplus, Tanh and Mul before.
"""
import numpy as np

from ..interop import onnx_importer
from ..layer import Layer, per_image, register


@register
class Mish(Layer):
    type_name = "Mish"
    group = "neuron"

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 8 * per_image(top_shapes[0])            # exp, log, tanh (about 2 each), the product

    def forward(self, bottom, top):
        x = bottom[0].data
        np.multiply(x, np.tanh(np.logaddexp(0, x)), out=top[0].data)     # logaddexp: no overflow

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            t = np.tanh(np.logaddexp(0, x))
            sig = (np.tanh(0.5 * x) + 1) * 0.5
            np.multiply(top[0].diff, t + x * (1 - t * t) * sig, out=bottom[0].diff)

    def to_onnx(self, g):
        if g.opset >= 18:
            g.node("Mish", g.inputs, g.outputs, self.name)
            return
        sp, t = f"{self.name}:softplus", f"{self.name}:tanh"
        g.node("Softplus", g.inputs, [sp], f"{self.name}_softplus")
        g.node("Tanh", [sp], [t], f"{self.name}_tanh")
        g.node("Mul", [g.inputs[0], t], g.outputs, self.name)


@onnx_importer("Mish")
def _mish_from_onnx(imp, node):
    imp.add(node, "Mish", [node.input[0]], node.output[0])
