"""HardSwish (MobileNetV3's activation): a piecewise-quadratic stand-in for x * sigmoid(x).

    forward:  y = x * min(max(x + 3, 0), 6) / 6
    backward: dy/dx = 0 for x <= -3,  (2x + 3) / 6 for -3 < x < 3,  1 for x >= 3

y is not monotonic in x (it dips to -3/8 at x = -3/2), so backward needs the bottom: the layer
never runs in place. ONNX has HardSwish from opset 14; decaf writes it as HardSigmoid(alpha 1/6,
beta 1/2) times x, which opset 13 has and which is the same function.
"""
import numpy as np

from ..interop import onnx_importer
from ..layer import Epilogue, Layer, per_image, register


@register
class HardSwish(Layer):
    type_name = "HardSwish"
    group = "neuron"
    any_layout = True

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 4 * per_image(top_shapes[0])           # add, clamp (2), multiply; the 1/6 folded in

    def epilogue(self):
        return Epilogue("hardswish")     # into this top: the producer's keeps x, which backward reads

    def forward(self, bottom, top):
        if self.fused:
            return
        x, y = bottom[0].data, top[0].data
        np.add(x, 3, out=y)
        np.clip(y, 0, 6, out=y)
        y *= x
        y /= 6

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = bottom[0].data
            slope = ((2 * x + 3) / 6).astype(x.dtype)    # negative on (-3, -3/2): y dips there
            slope[x <= -3] = 0
            slope[x >= 3] = 1
            np.multiply(top[0].diff, slope, out=bottom[0].diff)

    def to_onnx(self, g):
        gate = f"{self.name}:gate"
        g.node("HardSigmoid", g.inputs, [gate], f"{self.name}_gate", alpha=1.0 / 6, beta=0.5)
        g.node("Mul", [g.inputs[0], gate], g.outputs, self.name)


@onnx_importer("HardSwish")
def _hardswish_from_onnx(imp, node):
    imp.add(node, "HardSwish", [node.input[0]], node.output[0])
