"""Resize: nearest or linear resampling of the non-batch axes (ONNX Resize / Upsample).

Along each resized axis of size n -> m, an output position i maps to the input coordinate
    half_pixel:          (i + 1/2) / s - 1/2          (s = m / n, or the given scale)
    pytorch_half_pixel:  the same, 0 when n s == 1
    align_corners:       i (n - 1) / (n s - 1)        (0 when n s == 1; n s = m for given sizes)
    asymmetric:          i / s
nearest takes the input element there (rounded by ``nearest_mode``: round_prefer_floor,
round_prefer_ceil, floor, ceil; clamped to [0, n-1]); linear mixes the two neighbours. Both are a
matrix R (m x n) applied along the axis, y = R x, so backward is dx = R^T dy, axis by axis.
Give ``scales`` (one per non-batch axis; m = floor(n s)) or ``sizes`` (m per non-batch axis).
"""
import numpy as np

from ..errors import SpecError
from ..interop import onnx_importer
from ..layer import Layer, per_image, register

_COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def resize_matrix(n, m, scale, mode, coords, nearest_mode):
    """The (m, n) matrix that resamples an axis of size n to m (float64)."""
    i = np.arange(m, dtype=np.float64)
    w = n * scale                       # the output length before flooring, as ONNX's formulas use it
    if coords == "align_corners":
        x = i * (n - 1) / (w - 1) if w != 1 else np.zeros(m)
    elif coords == "asymmetric":
        x = i / scale
    else:
        x = (i + 0.5) / scale - 0.5
        if coords == "pytorch_half_pixel" and w == 1:
            x = np.zeros(m)
    r = np.zeros((m, n))
    if mode == "nearest":
        frac = x - np.floor(x)
        if nearest_mode == "floor":
            k = np.floor(x)
        elif nearest_mode == "ceil":
            k = np.ceil(x)
        elif nearest_mode == "round_prefer_ceil":
            k = np.floor(x + 0.5)
        else:
            k = np.where(frac == 0.5, np.floor(x), np.floor(x + 0.5))
        r[np.arange(m), np.clip(k, 0, n - 1).astype(int)] = 1
    else:
        x = np.clip(x, 0, n - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        w = x - lo
        np.add.at(r, (np.arange(m), lo), 1 - w)
        np.add.at(r, (np.arange(m), hi), w)
    return r


@register
class Resize(Layer):
    type_name = "Resize"
    PARAMS = {"mode": "nearest", "scales": None, "sizes": None, "coordinate_mode": "half_pixel",
              "nearest_mode": "round_prefer_floor"}
    gradcheck_case = ({"mode": "linear", "scales": [1, 2, 1.5]}, [(2, 2, 3, 4)])

    def summary(self):
        return f"{self.p['mode']} {list(self.p['scales'] or self.p['sizes'])}"

    def ops(self, bottom_shapes, top_shapes):
        return (4 if self.p["mode"] == "linear" else 1) * per_image(top_shapes[0])

    def validate(self):
        p = self.p
        if p["mode"] not in ("nearest", "linear"):
            raise SpecError(f"layer {self.name!r} (Resize): mode must be nearest or linear, got {p['mode']!r}")
        if p["coordinate_mode"] not in _COORDS or p["nearest_mode"] not in _NEAREST:
            raise SpecError(f"layer {self.name!r} (Resize): coordinate_mode must be one of {_COORDS} and "
                            f"nearest_mode one of {_NEAREST}")
        if (p["scales"] is None) == (p["sizes"] is None):
            raise SpecError(f"layer {self.name!r} (Resize): give exactly one of scales and sizes")
        values = p["scales"] if p["scales"] is not None else p["sizes"]
        if min(float(v) for v in values) <= 0:
            raise SpecError(f"layer {self.name!r} (Resize): scales and sizes must be > 0, got {values}")

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        p = self.p
        per = p["scales"] if p["scales"] is not None else p["sizes"]
        if len(per) != len(shape) - 1:
            raise self.shape_error(f"{len(per)} scales or sizes for {len(shape) - 1} non-batch axes")
        out, self.matrices = [shape[0]], []
        for axis, (n, v) in enumerate(zip(shape[1:], per), start=1):
            if p["scales"] is not None:
                m, scale = int(np.floor(n * float(v) + 1e-9)), float(v)
            else:
                m, scale = int(v), int(v) / n
            if m < 1:
                raise self.shape_error(f"axis {axis} of size {n} resizes to {m}")
            out.append(m)
            if m != n or scale != 1 or p["coordinate_mode"] == "align_corners" and m != n:
                r = resize_matrix(n, m, scale, p["mode"], p["coordinate_mode"], p["nearest_mode"])
                if not np.array_equal(r, np.eye(n)):
                    self.matrices.append((axis, r))
        return [tuple(out)]

    @staticmethod
    def _apply(x, axis, r):
        return np.moveaxis(np.tensordot(r, np.moveaxis(x, axis, 0), axes=1), 0, axis)

    def forward(self, bottom, top):
        y = bottom[0].data
        for axis, r in self.matrices:
            y = self._apply(y, axis, r.astype(y.dtype))
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            g = top[0].diff
            for axis, r in reversed(self.matrices):
                g = self._apply(g, axis, r.T.astype(g.dtype))
            bottom[0].diff[...] = g

    def to_onnx(self, g):
        """Resize (opset 11+): scales [1, s...], or sizes [N from Shape(x), m...]."""
        name, p = self.name, self.p
        attrs = {"mode": p["mode"], "coordinate_transformation_mode": p["coordinate_mode"]}
        if p["mode"] == "nearest":
            attrs["nearest_mode"] = p["nearest_mode"]
        if p["scales"] is not None:
            scales = g.const(f"{name}.scales", [1.0] + [float(s) for s in p["scales"]], np.float32)
            g.node("Resize", [g.inputs[0], "", scales], g.outputs, name, **attrs)
            return
        g.node("Shape", [g.inputs[0]], [f"{name}:shape"], f"{name}_shape")
        g.node("Slice", [f"{name}:shape", g.const(f"{name}.zero", [0], np.int64),
                         g.const(f"{name}.one", [1], np.int64)], [f"{name}:batch"], f"{name}_batch")
        g.node("Concat", [f"{name}:batch", g.const(f"{name}.sizes", [int(s) for s in p["sizes"]], np.int64)],
               [f"{name}:sizes"], f"{name}_sizes", axis=0)
        g.node("Resize", [g.inputs[0], "", "", f"{name}:sizes"], g.outputs, name, **attrs)


@onnx_importer("Resize", "Upsample")
def _resize_from_onnx(imp, node):
    """Nearest and linear; scales (attribute for Upsample-7, input 1 for Upsample-9 and Resize-10,
    input 2 from Resize-11) or sizes (input 3, may be computed from a shape and the batch); the batch
    and channel axes keep their size. cubic, tf_crop_and_resize and antialias are refused."""
    a = imp.attrs(node)
    r = imp.rank(node.input[0], node, node.op_type)
    mode = a.get("mode", "nearest")
    mode = "linear" if mode in ("bilinear", "trilinear") else mode
    if mode not in ("nearest", "linear"):
        raise imp.fail(f"node {imp.label(node)}: {node.op_type} mode {mode!r} is not supported (nearest, linear)")
    legacy = node.op_type == "Upsample" or imp.opset < 11
    coords = "asymmetric" if legacy else a.get("coordinate_transformation_mode", "half_pixel")
    nearest = "floor" if legacy else a.get("nearest_mode", "round_prefer_floor")
    if coords not in _COORDS or nearest not in _NEAREST:
        raise imp.fail(f"node {imp.label(node)}: coordinate_transformation_mode {coords!r} / nearest_mode "
                       f"{nearest!r} is not supported")
    if a.get("antialias", 0) or a.get("axes") is not None or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise imp.fail(f"node {imp.label(node)}: antialias, axes and keep_aspect_ratio_policy are not supported")
    kw = {"mode": mode, "coordinate_mode": coords, "nearest_mode": nearest}
    scale_index = 1 if legacy else 2
    if node.op_type == "Upsample" and "scales" in a:
        scales = [float(s) for s in a["scales"]]
    elif imp.has_input(node, scale_index) and (imp.const(node.input[scale_index]) is None
                                               or imp.const(node.input[scale_index]).size):
        scales = [float(s) for s in imp.need_const(node, scale_index, "scales").reshape(-1)]
    else:
        scales = None
    if scales is not None:
        if len(scales) != r or scales[0] != 1 or scales[1] != 1:
            raise imp.fail(f"node {imp.label(node)}: scales {scales} must keep the batch and channel axes (1, 1)")
        kw["scales"] = scales[1:]
    else:
        if not imp.has_input(node, 3):
            raise imp.fail(f"node {imp.label(node)}: neither scales nor sizes given")
        per = set()
        for b in imp.probe_batches:
            sizes = imp.value_at(node.input[3], b)
            if sizes is None:
                imp.need_const(node, 3, "sizes")
            sizes = [int(s) for s in np.reshape(sizes, -1)]
            shape = imp.shape_at(node.input[0], b)
            if len(sizes) != r or sizes[0] not in (b, imp.static_batch) or shape is None or sizes[1] != shape[1]:
                raise imp.fail(f"node {imp.label(node)}: sizes {sizes} must keep the batch and channel axes")
            per.add(tuple(sizes[1:]))
        if len(per) != 1:
            raise imp.fail(f"node {imp.label(node)}: sizes follow the batch size")
        kw["sizes"] = list(per.pop())
    imp.add(node, "Resize", [node.input[0]], node.output[0], **kw)
