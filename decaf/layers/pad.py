"""Pad: widen the non-batch axes (ONNX Pad; ``F.pad``).

    constant: the new border is ``value``          backward: dx = the centre of dy
    reflect:  x[..., 2, 1, | 0, 1, 2, ..., n-1, | n-2, n-3, ...]   (the edge is not repeated)
    edge:     x[..., 0, 0, | 0, 1, ..., n-1, | n-1, n-1, ...]
    backward for reflect and edge: each border element's dy is added to the element it copies.

``pads`` is [begin_1, ..., begin_{r-1}, end_1, ..., end_{r-1}] for the axes after the batch
(ONNX's order, without the batch entries); each >= 0.
"""
import numpy as np

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import REQUIRED, Layer, register

_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


@register
class Pad(Layer):
    type_name = "Pad"
    PARAMS = {"pads": REQUIRED, "mode": "constant", "value": 0.0}
    gradcheck_case = ({"pads": [0, 2, 1, 0, 1, 2], "mode": "reflect"}, [(2, 2, 4, 5)])

    def summary(self):
        return f"{self.p['mode']} {list(self.p['pads'])}"

    def validate(self):
        pads = [int(v) for v in self.p["pads"]]
        if self.p["mode"] not in _MODES:
            raise SpecError(f"layer {self.name!r} (Pad): mode must be constant, reflect or edge, got "
                            f"{self.p['mode']!r}")
        if len(pads) % 2 or min(pads, default=0) < 0:
            raise SpecError(f"layer {self.name!r} (Pad): pads {self.p['pads']} must be begin and end counts "
                            f"(>= 0) for each non-batch axis")
        k = len(pads) // 2
        self.widths = [(0, 0)] + list(zip(pads[:k], pads[k:]))

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) != len(self.widths):
            raise self.shape_error(f"pads for {len(self.widths) - 1} non-batch axes", len(self.widths), len(shape))
        mode = self.p["mode"]
        for d, (b, e) in zip(shape[1:], self.widths[1:]):
            if mode == "reflect" and max(b, e) > d - 1 or mode == "edge" and d == 0:
                raise self.shape_error(f"{mode} padding of {b, e} on an axis of size {d}")
        return [tuple(d + b + e for d, (b, e) in zip(shape, self.widths))]

    def forward(self, bottom, top):
        mode = self.p["mode"]
        kw = {"constant_values": float(self.p["value"])} if mode == "constant" else {}
        top[0].data[...] = np.pad(bottom[0].data, self.widths, mode=_MODES[mode], **kw)

    def backward(self, top, propagate_down, bottom):
        """Undo the axes one at a time, last first, folding each border back onto what it copied."""
        if not propagate_down[0]:
            return
        g, mode = top[0].diff, self.p["mode"]
        for axis in range(len(self.widths) - 1, 0, -1):
            b, e = self.widths[axis]
            if b == 0 and e == 0:
                continue
            n = g.shape[axis] - b - e
            g = np.moveaxis(g, axis, 0)
            core = g[b:b + n].copy()
            if mode == "reflect":
                core[1:b + 1] += g[:b][::-1]
                core[n - 1 - e:n - 1] += g[b + n:][::-1]
            elif mode == "edge":
                core[0] += g[:b].sum(axis=0)
                core[n - 1] += g[b + n:].sum(axis=0)
            g = np.moveaxis(core, 0, axis)
        bottom[0].diff[...] = g

    def to_onnx(self, g):
        """Pad (opset 11+: pads and the constant value as inputs; the batch axis gets 0s)."""
        k = len(self.widths) - 1
        pads = [0] + [b for b, _ in self.widths[1:]] + [0] + [e for _, e in self.widths[1:]]
        args = [g.inputs[0], g.const(f"{self.name}.pads", pads, np.int64)]
        if self.p["mode"] == "constant":
            args.append(g.const(f"{self.name}.value", np.float32(self.p["value"])))
        assert len(pads) == 2 * (k + 1)
        g.node("Pad", args, g.outputs, self.name, mode=self.p["mode"])


@onnx_importer("Pad")
def _pad_from_onnx(imp, node):
    """pads (and the constant value) attributes before opset 11, inputs from it; opset 18's axes
    input too. The batch axis must not be padded. (A zero Pad right before a Conv is not a layer:
    io/onnx_convert.py adds it to the Conv's pads.)"""
    a = imp.attrs(node)
    r = imp.rank(node.input[0], node, "Pad")
    mode = a.get("mode", "constant")
    if mode not in _MODES:
        raise imp.fail(f"node {imp.label(node)}: Pad mode {mode!r} is not supported (constant, reflect, edge)")
    if imp.opset < 11:
        pads, value = [int(p) for p in a.get("pads", [])], float(a.get("value", 0.0))
    else:
        pads = [int(p) for p in imp.need_const(node, 1, "pads").reshape(-1)]
        value = float(imp.need_const(node, 2, "the constant value").reshape(-1)[0]) if imp.has_input(node, 2) else 0.0
    axes = list(range(r))
    if imp.opset >= 18 and imp.has_input(node, 3):
        axes = [int(x) + r if int(x) < 0 else int(x) for x in imp.need_const(node, 3, "axes").reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise imp.fail(f"node {imp.label(node)}: {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * r, [0] * r
    for i, x in enumerate(axes):
        begin[x], end[x] = pads[i], pads[i + len(axes)]
    if begin[0] or end[0]:
        raise imp.fail(f"node {imp.label(node)}: padding the batch axis is not supported")
    if min(begin + end) < 0:
        raise imp.fail(f"node {imp.label(node)}: negative pads {pads} (cropping) are not supported")
    if not any(begin + end):
        imp.same_as(node.output[0], node.input[0])
        return
    imp.add(node, "Pad", [node.input[0]], node.output[0], pads=begin[1:] + end[1:], mode=mode, value=value)
