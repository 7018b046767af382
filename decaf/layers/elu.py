"""ELU and SELU: exponential linear units.

ELU (alpha 1.0):   y = x if x > 0 else alpha (exp(x) - 1)
                   dy/dx = 1 if x > 0 else alpha exp(x) = y + alpha
SELU (alpha 1.6733, gamma 1.0507, the self-normalising constants):
                   y = gamma x if x > 0 else gamma alpha (exp(x) - 1)
                   dy/dx = gamma if x > 0 else y + gamma alpha

For alpha > 0 (and gamma > 0), y > 0 exactly where x > 0, so backward needs only the top and the
layers may run in place. ONNX: Elu and Selu both ways. Caffe's ELU needs elu_param, which decaf's
Caffe schema does not read: refused.
"""
import numpy as np

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Layer, per_image, register


@register
class ELU(Layer):
    type_name = "ELU"
    PARAMS = {"alpha": 1.0}
    group = "neuron"
    inplace_ok = True

    def validate(self):
        for key in ("alpha", "gamma"):
            if key in self.p and not self.p[key] > 0:
                raise SpecError(f"layer {self.name!r}: {key} must be > 0, got {self.p[key]}")

    def _gamma_alpha(self):
        gamma = self.p.get("gamma", 1.0)
        return gamma, gamma * self.p["alpha"]

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def ops(self, bottom_shapes, top_shapes):
        return 4 * per_image(top_shapes[0])

    def forward(self, bottom, top):
        x = bottom[0].data
        gamma, ga = self._gamma_alpha()
        negative = np.expm1(np.minimum(x, 0)) * np.asarray(ga, x.dtype)    # exp of positives never runs
        np.copyto(top[0].data, np.where(x > 0, x * np.asarray(gamma, x.dtype), negative))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            gamma, ga = self._gamma_alpha()
            np.multiply(top[0].diff, np.where(y > 0, gamma, y + ga).astype(y.dtype), out=bottom[0].diff)

    def to_onnx(self, g):
        g.node("Elu", g.inputs, g.outputs, self.name, alpha=float(self.p["alpha"]))


@register
class SELU(ELU):
    type_name = "SELU"
    # ONNX's defaults: the float32 values of the constants of the SELU paper
    PARAMS = {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}

    def to_onnx(self, g):
        g.node("Selu", g.inputs, g.outputs, self.name, alpha=float(self.p["alpha"]), gamma=float(self.p["gamma"]))


@onnx_importer("Elu")
def _elu_from_onnx(imp, node):
    alpha = float(imp.attrs(node).get("alpha", 1.0))
    if not alpha > 0:
        raise imp.fail(f"node {imp.label(node)}: Elu with alpha {alpha} is not supported (alpha > 0)")
    imp.add(node, "ELU", [node.input[0]], node.output[0], alpha=alpha)


@onnx_importer("Selu")
def _selu_from_onnx(imp, node):
    a = imp.attrs(node)
    alpha, gamma = float(a.get("alpha", SELU.PARAMS["alpha"])), float(a.get("gamma", SELU.PARAMS["gamma"]))
    if not (alpha > 0 and gamma > 0):
        raise imp.fail(f"node {imp.label(node)}: Selu with alpha {alpha}, gamma {gamma} is not supported (> 0)")
    imp.add(node, "SELU", [node.input[0]], node.output[0], alpha=alpha, gamma=gamma)
