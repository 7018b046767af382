"""Softplus and Softsign: smooth stand-ins for ReLU and for tanh.

Softplus:  y = log(1 + exp(x))          dy/dx = sigmoid(x) = 1 - exp(-y)
Softsign:  y = x / (1 + |x|)            dy/dx = 1 / (1 + |x|)^2 = (1 - |y|)^2

Both are monotonic, so backward works from the top alone and they may run in place. ONNX:
Softplus and Softsign both ways; Softplus, Tanh, then a Mul by the input (PyTorch's Mish before
opset 18) is read as one Mish. (PyTorch writes its Softsign as x / (1 + |x|).) Caffe has neither.
"""
import numpy as np

from ..interop import onnx_importer
from ..layer import Layer, per_image, register


class _Monotonic(Layer):
    group = "neuron"
    inplace_ok = True
    ops_per_output = 4

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return self.ops_per_output * per_image(top_shapes[0])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, self.slope(top[0].data), out=bottom[0].diff)

    def to_onnx(self, g):
        g.node(self.type_name, g.inputs, g.outputs, self.name)


@register
class Softplus(_Monotonic):
    type_name = "Softplus"

    def forward(self, bottom, top):
        np.logaddexp(0, bottom[0].data, out=top[0].data)      # no overflow for large x

    def slope(self, y):
        return -np.expm1(-y)                                   # 1 - exp(-y), accurate for small y


@register
class Softsign(_Monotonic):
    type_name = "Softsign"
    ops_per_output = 3

    def forward(self, bottom, top):
        x = bottom[0].data
        np.divide(x, 1 + np.abs(x), out=top[0].data)

    def slope(self, y):
        return (1 - np.abs(y)) ** 2


@onnx_importer("Softplus", "Softsign")
def _softplus_from_onnx(imp, node):
    """Softplus read only by a Tanh read only by a Mul with the Softplus's input is Mish (as PyTorch
    writes it before opset 18): one Mish layer."""
    if node.op_type == "Softplus":
        tanh = imp.sole_consumer(node.output[0], "Tanh")
        mul = imp.sole_consumer(tanh.output[0], "Mul") if tanh is not None else None
        if mul is not None and sorted(mul.input) == sorted([node.input[0], tanh.output[0]]):
            imp.add(node, "Mish", [node.input[0]], mul.output[0])
            imp.absorb(tanh)
            imp.absorb(mul)
            return
    imp.add(node, node.op_type, [node.input[0]], node.output[0])      # the same names in both
