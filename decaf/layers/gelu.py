"""GELU (ConvNeXt's and the transformers' activation) and the error function it is built on.

GELU, approximate "none" (exact):  y = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2
                                   dy/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
GELU, approximate "tanh":          u = k (x + c x^3),  k = sqrt(2 / pi),  c = 0.044715
                                   y = x (1 + tanh u) / 2
                                   dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) k (1 + 3 c x^2) / 2
Erf:                               y = erf(x),  dy/dx = 2 exp(-x^2) / sqrt(pi)

The exact form's forward is kernels.gelu for float32 (one compiled pass, within 3e-7 max(1, |x|)).
Both need the bottom in backward (GELU is not monotonic), so neither runs in place. ONNX: Gelu
(opset 20, attribute approximate) and Erf are read; PyTorch before opset 20 exports the exact GELU
as Div(x, sqrt 2), Erf, Add 1, Mul x, Mul 0.5, which is read back as one GELU layer
(``gelu_chain_from_onnx``, called by the Div importer) when nothing else reads its inner values.
decaf writes Gelu from opset 20, before it that chain (or the tanh form's).
"""
import math

import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Epilogue, Layer, per_image, register

K_TANH = math.sqrt(2 / math.pi)
C_TANH = 0.044715


def _erf(x, out=None):
    """erf(x) into out (a new array if None): kernels.erf (compiled for float32: csrc/elementwise.c,
    within 2.5e-7; SciPy's in the NumPy backend and for float64)."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x) if out is None else out
    if y.flags.c_contiguous and y.shape == x.shape and y.dtype == x.dtype:
        kernels.erf(x.reshape(-1), y.reshape(-1))
    else:
        y[...] = _erf(x)
    return y


class _Pointwise(Layer):
    group = "neuron"
    any_layout = True

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(top[0].diff, self.slope(bottom[0].data), out=bottom[0].diff)


@register
class GELU(_Pointwise):
    type_name = "GELU"
    PARAMS = {"approximate": "none"}

    def validate(self):
        if self.p["approximate"] not in ("none", "tanh"):
            raise SpecError(f"layer {self.name!r}: approximate must be 'none' or 'tanh', got "
                            f"{self.p['approximate']!r}")

    def summary(self):
        return "tanh" if self.p["approximate"] == "tanh" else ""

    def ops(self, bottom_shapes, top_shapes):
        return (8 if self.p["approximate"] == "tanh" else 5) * per_image(top_shapes[0])

    def epilogue(self):
        """The exact form: applied by the convolution before it (csrc/activation.h's GELU) into
        this top, the producer's keeping x for backward."""
        return Epilogue("gelu") if self.p["approximate"] == "none" else None

    def forward(self, bottom, top):
        if self.fused:
            return
        x, y = bottom[0].data, top[0].data
        if self.p["approximate"] == "none" and all(v.dtype == np.float32 and v.flags.c_contiguous for v in (x, y)):
            kernels.gelu(x.reshape(-1), y.reshape(-1))     # one pass (csrc/elementwise.c)
            return
        if self.p["approximate"] == "tanh":
            gate = np.tanh(K_TANH * (x + C_TANH * x ** 3))
        else:
            gate = _erf(x * np.asarray(1 / math.sqrt(2), x.dtype))
        np.multiply(x, (gate + 1) * np.asarray(0.5, x.dtype), out=top[0].data)

    def slope(self, x):
        if self.p["approximate"] == "tanh":
            t = np.tanh(K_TANH * (x + C_TANH * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K_TANH * (1 + 3 * C_TANH * x * x)
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)))
        return cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    def to_onnx(self, g):
        name, x = self.name, g.inputs[0]
        if g.opset >= 20:
            g.node("Gelu", [x], g.outputs, name, approximate=self.p["approximate"])
            return

        def step(op, inputs, tag):
            g.node(op, inputs, [f"{name}:{tag}"], f"{name}_{tag}")
            return f"{name}:{tag}"

        def const(tag, value):
            return g.const(f"{name}.{tag}", value)

        if self.p["approximate"] == "tanh":
            x3 = step("Mul", [step("Mul", [x, x], "x2"), x], "x3")
            inner = step("Add", [x, step("Mul", [x3, const("c", C_TANH)], "cx3")], "inner")
            gate = step("Tanh", [step("Mul", [inner, const("k", K_TANH)], "u")], "tanh")
        else:
            gate = step("Erf", [step("Div", [x, const("sqrt2", math.sqrt(2))], "scaled")], "erf")
        gated = step("Mul", [x, step("Add", [gate, const("one", 1.0)], "gate")], "gated")
        g.node("Mul", [gated, const("half", 0.5)], g.outputs, name)


@register
class Erf(_Pointwise):
    type_name = "Erf"

    def ops(self, bottom_shapes, top_shapes):
        return 4 * per_image(top_shapes[0])

    def forward(self, bottom, top):
        _erf(bottom[0].data, top[0].data)

    def slope(self, x):
        return (2 / math.sqrt(math.pi)) * np.exp(-x * x)

    def to_onnx(self, g):
        g.node("Erf", g.inputs, g.outputs, self.name)


@onnx_importer("Gelu")
def _gelu_from_onnx(imp, node):
    approximate = imp.attrs(node).get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise imp.fail(f"node {imp.label(node)}: unknown approximate {approximate!r} (none or tanh)")
    imp.add(node, "GELU", [node.input[0]], node.output[0], approximate=approximate)


@onnx_importer("Erf")
def _erf_from_onnx(imp, node):
    imp.add(node, "Erf", [node.input[0]], node.output[0])


def gelu_chain_from_onnx(imp, div):
    """Div(x, sqrt 2) -> Erf -> Add 1 -> Mul by x -> Mul by 1/2 (the exact GELU as exporters write it
    before opset 20), each inner value read only by the next node and none an output of the graph:
    one GELU layer writing the last Mul's output. True when taken (``div`` is the Div node)."""
    def constant(node, value):
        """Whether ``node`` has two inputs, one of them the constant ``value`` (rtol 1e-6)."""
        return len(node.input) == 2 and any(v is not None and abs(v - value) <= 1e-6 * abs(value)
                                            for v in map(imp.scalar, node.input))

    x = div.input[0]
    if imp.const(div.input[1]) is None or not constant(div, math.sqrt(2)):
        return False
    erf = imp.sole_consumer(div.output[0], "Erf")
    add = erf and imp.sole_consumer(erf.output[0], "Add")
    if add is None or not constant(add, 1.0):
        return False
    mul = imp.sole_consumer(add.output[0], "Mul")
    if mul is None or sorted(mul.input) != sorted([x, add.output[0]]):
        return False
    half = imp.sole_consumer(mul.output[0], "Mul")
    if half is None or not constant(half, 0.5):
        return False
    imp.add(half, "GELU", [x], half.output[0], approximate="none")
    for node in (erf, add, mul, half):
        imp.absorb(node)
    return True
