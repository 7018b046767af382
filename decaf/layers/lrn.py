"""Local response normalisation across channels (Krizhevsky et al. 2012).

Parameters: local_size n (5), alpha (1), beta (0.75), k (1). As in Caffe and
ONNX, alpha is divided by n:

    s_c = k + (alpha / n) * sum_{c' in window(c)} x_c'^2,   window(c) = [c - (n-1)/2, c + n/2]
    y_c = x_c * s_c^(-beta)
    dx_c = dy_c s_c^(-beta) - (2 alpha beta / n) x_c sum_{c': c in window(c')} dy_c' y_c' / s_c'
"""
import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register


@register
class LRN(Layer):
    type_name = "LRN"
    group = "LRN"
    gradcheck_case = ({"local_size": 5, "alpha": 0.5, "k": 2.0}, [(2, 7, 3, 3)])

    def summary(self):
        return f"n={self.p['local_size']}"

    def ops(self, bottom_shapes, top_shapes):
        # window sum of squares, scale, power, product
        return per_image(top_shapes[0]) * (self.p["local_size"] + 4)
    PARAMS = {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0}

    @classmethod
    def to_caffe(cls, p, w):
        w.add("LRN", lrn_param={"local_size": int(p["local_size"]), "alpha": float(p["alpha"]),
                                "beta": float(p["beta"]), "k": float(p["k"])})

    def validate(self):
        if int(self.p["local_size"]) < 1:
            raise SpecError(f"layer {self.name!r}: local_size must be >= 1, got {self.p['local_size']}")

    def reshape(self, bottom_shapes):
        shape = self.image_shape(bottom_shapes[0])
        self.scale = np.zeros(shape, np.float32)
        return [shape]

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.scale.dtype != x.dtype:
            self.scale = self.scale.astype(x.dtype)
        p = self.p
        kernels.lrn_forward(x, top[0].data, self.scale, int(p["local_size"]), float(p["alpha"]),
                            float(p["beta"]), float(p["k"]))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.p
            kernels.lrn_backward(bottom[0].data, top[0].data, self.scale, top[0].diff, bottom[0].diff,
                                 int(p["local_size"]), float(p["alpha"]), float(p["beta"]))

    def to_onnx(self, g):
        p = self.p
        g.node("LRN", g.inputs, g.outputs, self.name, size=int(p["local_size"]), alpha=float(p["alpha"]),
               beta=float(p["beta"]), bias=float(p["k"]))


@onnx_importer("LRN")
def _lrn_from_onnx(imp, node):
    """ONNX's size, alpha, beta, bias are decaf's local_size, alpha, beta, k (alpha / n in both)."""
    a = imp.attrs(node)
    if "size" not in a:
        raise imp.fail(f"node {imp.label(node)}: LRN without size")
    imp.add(node, "LRN", [node.input[0]], node.output[0], local_size=int(a["size"]),
            alpha=float(a.get("alpha", 1e-4)), beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)))


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("LRN")
def _lrn_from_caffe(ctx, layer):
    """ACROSS_CHANNELS only; Caffe's alpha is divided by local_size, as decaf's is."""
    p = layer.param("lrn_param")
    if p.get("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
        raise ctx.fail("norm_region WITHIN_CHANNEL is not supported")
    return {"type": "LRN", "local_size": p.get("local_size", 5), "alpha": p.get("alpha", 1.0),
            "beta": p.get("beta", 0.75), "k": p.get("k", 1.0)}
