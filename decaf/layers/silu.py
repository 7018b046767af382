"""SiLU, also called Swish (EfficientNet's and RegNetY's activation): x times its sigmoid.

    forward:  s = sigmoid(alpha x) = 1 / (1 + exp(-alpha x));  y = x s      (alpha 1: PyTorch's SiLU)
    backward: dy/dx = s + alpha x s (1 - s)

y is not monotonic (it dips to about -0.278 / alpha near x = -1.28 / alpha), so backward needs the
bottom: the layer never runs in place. PyTorch exports SiLU as Sigmoid then Mul (a graph pattern,
read by the converter); ONNX's own Swish op (opset 24, attribute alpha) is read here. decaf writes
Sigmoid and Mul (and a Mul by alpha first when alpha != 1), which every opset has.
"""
import numpy as np

from ..interop import onnx_importer
from ..layer import Epilogue, Layer, per_image, register


def sigmoid(x):
    """1 / (1 + exp(-x)), through tanh so that no exp overflows."""
    return (np.tanh(0.5 * x) + 1) * np.asarray(0.5, x.dtype)


@register
class SiLU(Layer):
    type_name = "SiLU"
    PARAMS = {"alpha": 1.0}
    group = "neuron"
    any_layout = True

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 6 * per_image(top_shapes[0])            # the sigmoid (about 4), the scaling, the product

    def epilogue(self):
        return Epilogue("silu", alpha=self.p["alpha"])   # into this top: the producer's keeps x

    def forward(self, bottom, top):
        if self.fused:
            return
        x = bottom[0].data
        np.multiply(x, sigmoid(x * np.asarray(self.p["alpha"], x.dtype)), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            ax = x * np.asarray(self.p["alpha"], x.dtype)
            s = sigmoid(ax)
            np.multiply(top[0].diff, s * (1 + ax * (1 - s)), out=bottom[0].diff)

    def to_onnx(self, g):
        x, gate_in, alpha = g.inputs[0], g.inputs[0], float(self.p["alpha"])
        if alpha != 1:
            gate_in = f"{self.name}:scaled"
            g.node("Mul", [x, g.const(f"{self.name}.alpha", alpha)], [gate_in], f"{self.name}_scale")
        g.node("Sigmoid", [gate_in], [f"{self.name}:gate"], f"{self.name}_gate")
        g.node("Mul", [x, f"{self.name}:gate"], g.outputs, self.name)


@onnx_importer("Swish")
def _swish_from_onnx(imp, node):
    imp.add(node, "SiLU", [node.input[0]], node.output[0], alpha=float(imp.attrs(node).get("alpha", 1.0)))
