"""Eltwise: combine bottoms of equal shape elementwise.

operation "sum" (default): y = sum_i c_i x_i (coeff c, default all 1);  dx_i = c_i dy
operation "prod":          y = prod_i x_i;   dx_i = dy * prod_{j != i} x_j
operation "max":           y = max_i x_i;    dx_i = dy where x_i was the (first) max, else 0
"""
import numpy as np

from ..errors import SpecError
from ..layer import Layer, per_image, register


@register
class Eltwise(Layer):
    type_name = "Eltwise"
    PARAMS = {"operation": "sum", "coeff": None}
    n_bottom = (2, None)

    def summary(self):
        return str(self.p["operation"])

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) * max(len(bottom_shapes) - 1, 1)

    def validate(self):
        if self.p["operation"] not in ("sum", "prod", "max"):
            raise SpecError(f"layer {self.name!r}: operation must be sum, prod or max, got {self.p['operation']!r}")
        coeff = self.p["coeff"]
        if coeff is not None and len(coeff) != len(self.bottom_names):
            raise SpecError(f"layer {self.name!r}: {len(coeff)} coefficients for {len(self.bottom_names)} bottoms")

    def reshape(self, bottom_shapes):
        for name, shape in zip(self.bottom_names, bottom_shapes):
            if tuple(shape) != tuple(bottom_shapes[0]):
                raise self.shape_error(f"bottom {name!r} differs from {self.bottom_names[0]!r}",
                                       bottom_shapes[0], shape)
        return [bottom_shapes[0]]

    def _coeff(self):
        return self.p["coeff"] or [1.0] * len(self.bottom_names)

    def forward(self, bottom, top):
        y, op = top[0].data, self.p["operation"]
        if op == "sum":
            c = self._coeff()
            np.multiply(bottom[0].data, c[0], out=y) if c[0] != 1 else np.copyto(y, bottom[0].data)
            for blob, ci in zip(bottom[1:], c[1:]):
                y += blob.data if ci == 1 else ci * blob.data
        elif op == "prod":
            np.copyto(y, bottom[0].data)
            for blob in bottom[1:]:
                y *= blob.data
        else:
            stacked = np.stack([b.data for b in bottom])
            self.argmax = stacked.argmax(axis=0)
            np.copyto(y, np.take_along_axis(stacked, self.argmax[None], 0)[0])

    def backward(self, top, propagate_down, bottom):
        dy, op = top[0].diff, self.p["operation"]
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            if op == "sum":
                c = self._coeff()[i]
                np.multiply(dy, c, out=blob.diff)
            elif op == "prod":
                others = np.ones_like(dy)
                for j, other in enumerate(bottom):
                    if j != i:
                        others *= other.data
                np.multiply(dy, others, out=blob.diff)
            else:
                np.multiply(dy, self.argmax == i, out=blob.diff)
