"""HardSigmoid: a piecewise-linear sigmoid (MobileNetV3's squeeze-excitation gate).

    forward:  y = min(max(alpha x + beta, 0), 1)       (ONNX's defaults alpha 0.2, beta 0.5;
                                                        PyTorch's Hardsigmoid is alpha 1/6, beta 1/2)
    backward: dy/dx = alpha where 0 < alpha x + beta < 1, else 0

0 < y < 1 exactly where the slope is alpha, so backward needs only the top and the layer may run
in place. ONNX: HardSigmoid both ways (opset 6 on); HardSigmoid(1/6, 1/2) then a Mul by its own
input is read as one HardSwish. Caffe has no such layer.
"""
import numpy as np

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Epilogue, Layer, per_image, register


@register
class HardSigmoid(Layer):
    type_name = "HardSigmoid"
    PARAMS = {"alpha": 0.2, "beta": 0.5}
    group = "neuron"
    inplace_ok = True

    def validate(self):
        if not self.p["alpha"] > 0:
            raise SpecError(f"layer {self.name!r}: alpha must be > 0 (got {self.p['alpha']}), "
                            f"else the top alone cannot tell where the slope is")

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 4 * per_image(top_shapes[0])           # multiply, add, clamp (2)

    def epilogue(self):
        return Epilogue("hardsigmoid", lo=self.p["beta"], hi=1.0, alpha=self.p["alpha"])

    def forward(self, bottom, top):
        if self.fused:
            return
        x, y = bottom[0].data, top[0].data
        np.multiply(x, self.p["alpha"], out=y)
        y += self.p["beta"]
        np.clip(y, 0, 1, out=y)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            inside = (y > 0) & (y < 1)
            np.multiply(top[0].diff, inside * np.asarray(self.p["alpha"], y.dtype), out=bottom[0].diff)

    def to_onnx(self, g):
        g.node("HardSigmoid", g.inputs, g.outputs, self.name, alpha=float(self.p["alpha"]),
               beta=float(self.p["beta"]))


@onnx_importer("HardSigmoid")
def _hardsigmoid_from_onnx(imp, node):
    """HardSigmoid(1/6, 1/2) read only by a Mul with its own input is HardSwish (as PyTorch writes it
    before opset 14, and decaf at any opset): one HardSwish layer."""
    a = imp.attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if not alpha > 0:
        raise imp.fail(f"node {imp.label(node)}: HardSigmoid with alpha {alpha} is not supported (alpha > 0)")
    mul = imp.sole_consumer(node.output[0])
    if (mul is not None and mul.op_type == "Mul" and sorted(mul.input) == sorted([node.input[0], node.output[0]])
            and abs(alpha - 1 / 6) < 1e-7 and beta == 0.5):
        imp.add(node, "HardSwish", [node.input[0]], mul.output[0])
        imp.absorb(mul)
        return
    imp.add(node, "HardSigmoid", [node.input[0]], node.output[0], alpha=alpha, beta=beta)

