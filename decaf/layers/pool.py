"""Pooling: max or average over kh x kw windows, per channel.

Parameters: pool ("max" or "ave"); kernel_size; stride (1); pad (int, [h, w]
or [top, left, bottom, right]); global_pooling (False: window = whole image);
round_mode ("ceil" as in Caffe, or "floor" as in PyTorch's default);
count_include_pad (True: average divides by the window clipped to the padded
image, as Caffe does; False: by the number of real pixels).

Output size: Ho = round((H + pad_top + pad_bottom - kh) / sh) + 1 with the
chosen rounding; in ceil mode a last window that would start in the bottom
padding is dropped (Caffe and PyTorch agree on this).

    max:  y = max over the window;   dx[argmax] += dy   (the first max wins ties)
          (in test phase the forward skips argmax, and a backward finds it when asked)
    ave:  y = sum(window) / count;   dx[window] += dy / count
"""
import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, as_pads, as_pair, pair_text, per_image, register
from .conv import pads_from_onnx


def pool_out_size(size, kernel, stride, pad_before, pad_after, ceil):
    span = size + pad_before + pad_after - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


@register
class Pooling(Layer):
    type_name = "Pooling"
    group = "pool"
    gradcheck_case = ({"kernel_size": 3, "stride": 2}, [(2, 3, 7, 7)])

    def summary(self):
        p = self.p
        if p["global_pooling"]:
            return f"{p['pool']}, global"
        stride = p["stride"] if not isinstance(p["stride"], (list, tuple)) else pair_text(p["stride"])
        return f"{p['pool']} {pair_text(p['kernel_size'])}, /{stride}"

    def ops(self, bottom_shapes, top_shapes):
        kh, kw = self.kernel
        return per_image(top_shapes[0]) * kh * kw      # one comparison or add per window element
    PARAMS = {"pool": "max", "kernel_size": None, "stride": 1, "pad": 0, "global_pooling": False,
              "round_mode": "ceil", "count_include_pad": True}

    @classmethod
    def to_caffe(cls, p, w):
        """Caffe's Pooling: symmetric pads; its average always counts the padding."""
        pp = {"pool": "MAX" if str(p["pool"]).lower() == "max" else "AVE"}
        if p["global_pooling"]:
            pp["global_pooling"] = True
        else:
            w.hw(pp, "kernel_size", p["kernel_size"])
            w.hw(pp, "stride", p["stride"], skip=1)
            ph, pw = w.symmetric_pads(p["pad"])
            w.hw(pp, "pad", [ph, pw], skip=0)
            if pp["pool"] == "AVE" and (ph or pw) and not p["count_include_pad"]:
                raise w.refuse("Caffe average pooling always counts the padding")
        if p["round_mode"] == "floor":
            pp["round_mode"] = "FLOOR"
        w.add("Pooling", pooling_param=pp)

    def validate(self):
        p = self.p
        p["pool"] = str(p["pool"]).lower()
        if p["pool"] not in ("max", "ave"):
            raise SpecError(f"layer {self.name!r}: pool must be 'max' or 'ave', got {p['pool']!r}")
        if p["round_mode"] not in ("ceil", "floor"):
            raise SpecError(f"layer {self.name!r}: round_mode must be 'ceil' or 'floor', got {p['round_mode']!r}")
        if p["kernel_size"] is None and not p["global_pooling"]:
            raise SpecError(f"layer {self.name!r}: kernel_size is required unless global_pooling is set")
        self.stride = as_pair(p["stride"], "stride")
        self.pads = as_pads(p["pad"])
        if min(self.stride) < 1 or min(self.pads) < 0:   # (a stride of 0 divided by zero in reshape)
            raise SpecError(f"layer {self.name!r}: stride must be >= 1 and pad >= 0, got stride "
                            f"{list(self.stride)} and pad {list(self.pads)}")
        if not p["global_pooling"]:
            self.kernel = as_pair(p["kernel_size"], "kernel_size")
            kh, kw = self.kernel
            if kh < 1 or kw < 1:
                raise SpecError(f"layer {self.name!r}: kernel_size must be >= 1, got {list(self.kernel)}")
            if self.pads[0] >= kh or self.pads[2] >= kh or self.pads[1] >= kw or self.pads[3] >= kw:
                raise SpecError(f"layer {self.name!r}: pad {self.pads} must be smaller than the kernel {self.kernel}")

    def reshape(self, bottom_shapes):
        shape = self.image_shape(bottom_shapes[0])
        n, c, h, w = shape
        if self.p["global_pooling"]:
            self.kernel, self.stride, self.pads = (h, w), (1, 1), (0, 0, 0, 0)
        ceil = self.p["round_mode"] == "ceil"
        pt, pl, pb, pr = self.pads
        ho = pool_out_size(h, self.kernel[0], self.stride[0], pt, pb, ceil)
        wo = pool_out_size(w, self.kernel[1], self.stride[1], pl, pr, ceil)
        if ho < 1 or wo < 1:
            raise self.shape_error(f"input {h}x{w} is smaller than the kernel {self.kernel}", ">= 1x1", (ho, wo))
        if self.p["pool"] == "max":
            self.argmax = np.zeros((n, c, ho, wo), np.int32)
            self.argmax_stale = True
        return [(n, c, ho, wo)]

    def means_of_bottom(self):
        """Global average pooling: each channel's mean over the plane."""
        return self.p["global_pooling"] and self.p["pool"] == "ave"

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.p["pool"] == "max" and self.phase == "test":
            # inference: no argmax to record; a backward in test phase finds it then (see backward)
            kernels.max_pool_values(x, y, self.kernel, self.stride, self.pads)
            self.argmax_stale = True
        elif self.p["pool"] == "max":
            kernels.max_pool_forward(x, y, self.argmax, self.kernel, self.stride, self.pads)
            self.argmax_stale = False
        else:
            kernels.avg_pool_forward(x, y, self.kernel, self.stride, self.pads, self.p["count_include_pad"])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.p["pool"] == "max":
            if self.argmax_stale:    # the bottom is unchanged since forward (Net refuses in-place writes to it)
                kernels.max_pool_forward(bottom[0].data, np.empty_like(dy), self.argmax, self.kernel, self.stride,
                                         self.pads)
                self.argmax_stale = False
            kernels.max_pool_backward(dy, self.argmax, dx)
        else:
            kernels.avg_pool_backward(dy, dx, self.kernel, self.stride, self.pads, self.p["count_include_pad"])

    def to_onnx(self, g):
        p = self.p
        op = "Max" if p["pool"] == "max" else "Average"
        if p["global_pooling"]:
            g.node(f"Global{op}Pool", g.inputs, g.outputs, self.name)
            return
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.stride), "pads": list(self.pads),
                 "ceil_mode": int(p["round_mode"] == "ceil")}
        if op == "Average":
            attrs["count_include_pad"] = int(bool(p["count_include_pad"]))
        g.node(f"{op}Pool", g.inputs, g.outputs, self.name, **attrs)


# ---- ONNX -> decaf ------------------------------------------------------------------------------
@onnx_importer("MaxPool", "AveragePool")
def _pool_from_onnx(imp, node):
    a = imp.attrs(node)
    imp.only_first_output(node)
    kernel = [int(k) for k in a.get("kernel_shape", [])]
    if len(kernel) != 2:
        raise imp.fail(f"node {imp.label(node)}: only 2-D pooling is supported (kernel_shape {kernel})")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise imp.fail(f"node {imp.label(node)}: pooling with dilations is not supported")
    stride = [int(s) for s in a.get("strides", [1, 1])]
    pool = "max" if node.op_type == "MaxPool" else "ave"
    kw = {"pool": pool, "kernel_size": kernel, "stride": stride,
          "round_mode": "ceil" if a.get("ceil_mode", 0) else "floor"}
    if pool == "ave":
        kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
    kw.update(pads_from_onnx(imp, node, a, allow_same_mode=False, kernel=kernel, stride=stride))
    imp.add(node, "Pooling", [node.input[0]], node.output[0], **kw)


@onnx_importer("GlobalAveragePool", "GlobalMaxPool")
def _global_pool_from_onnx(imp, node):
    pool = "max" if node.op_type == "GlobalMaxPool" else "ave"
    imp.add(node, "Pooling", [node.input[0]], node.output[0], pool=pool, global_pooling=True)


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("Pooling")
def _pool_from_caffe(ctx, layer):
    """MAX or AVE; global_pooling; round_mode (Caffe's default CEIL)."""
    p = layer.param("pooling_param")
    pool = p.get("pool", "MAX")
    if pool not in ("MAX", "AVE"):
        raise ctx.fail(f"pool method {pool} is not supported (MAX or AVE)")
    d = {"type": "Pooling", "pool": pool.lower()}
    if p.get("global_pooling"):
        d["global_pooling"] = True
    else:
        d["kernel_size"] = ctx.hw(p, "kernel_size", None)
        d["stride"] = ctx.hw(p, "stride", 1)
        d["pad"] = ctx.hw(p, "pad", 0)
    d["round_mode"] = "floor" if p.get("round_mode") == "FLOOR" else "ceil"
    return d
