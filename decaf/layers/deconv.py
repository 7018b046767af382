"""Deconvolution (transposed convolution, PyTorch's ConvTranspose2d): the adjoint of Convolution,
as GEMM + col2im.

Parameters: num_output K; kernel_size k or [kh, kw]; stride (1); pad (0) as int, [h, w] or
[top, left, bottom, right], cropped from the output; output_padding (0, or [h, w]: rows and
columns added at the bottom and right, each smaller than the stride, as ONNX Runtime requires); group (1);
dilation (1); bias_term (True); weight_filler; bias_filler.

Shapes: x (N, C, H, W), W (C, K/group, kh, kw) (the layout of the convolution it is the adjoint of),
b (K,), y (N, K, Ho, Wo), Ho = sh (H - 1) + dh (kh - 1) + 1 + output_padding_h - pad_top - pad_bottom.

    forward:  cols_g = W_g^T x_g            (K/group kh kw, N H W), one GEMM per group g
              y = col2im(cols) + b          each input pixel scatters a weighted kernel window
    backward: dcols = im2col(dy)            (the forward of the convolution with these geometry)
              dx_g = W_g dcols_g;  dW_g = x_g dcols_g^T;  db = sum of dy over N, Ho, Wo
"""
import numpy as np

from .. import kernels
from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import REQUIRED, Layer, as_pads, as_pair, pair_text, per_image, register
from .conv import add_filters, grouped_channels, read_convolution_param, write_convolution_param


@register
class Deconvolution(Layer):
    type_name = "Deconvolution"
    group = "conv"
    gradcheck_case = ({"num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2,
                       "bias_filler": {"type": "gaussian", "std": 1.0}}, [(2, 2, 3, 3)])
    PARAMS = {"num_output": REQUIRED, "kernel_size": REQUIRED, "stride": 1, "pad": 0, "output_padding": [0, 0],
              "group": 1, "dilation": 1, "bias_term": True,
              "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.0}}

    def validate(self):
        p, what = self.p, f"layer {self.name!r}"
        self.kernel = as_pair(p["kernel_size"], f"{what}: kernel_size")
        self.stride = as_pair(p["stride"], f"{what}: stride")
        self.dilation = as_pair(p["dilation"], f"{what}: dilation")
        self.pads = as_pads(p["pad"], f"{what}: pad")
        op = p["output_padding"]
        op = [op, op] if isinstance(op, int) and not isinstance(op, bool) else op
        if (not isinstance(op, (list, tuple)) or len(op) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in op)):
            raise SpecError(f"{what}: output_padding must be an integer >= 0 or a pair of them, got {op!r}")
        self.output_padding = tuple(op)
        if any(a >= s for a, s in zip(self.output_padding, self.stride)):
            raise SpecError(f"{what}: output_padding {list(op)} must be smaller than the stride {list(self.stride)}")
        if p["num_output"] % p["group"]:
            raise SpecError(f"{what}: num_output {p['num_output']} not divisible by group {p['group']}")

    def setup(self, bottom_shapes, fill_rng):
        c, k = grouped_channels(self, bottom_shapes)
        add_filters(self, (c, k // self.p["group"]) + self.kernel, fill_rng)

    def reshape(self, bottom_shapes):
        shape = self.image_shape(bottom_shapes[0])
        n, c, h, w = shape
        if c != self.weight.shape[0]:
            raise self.shape_error(f"bottom {self.bottom_names[0]!r} channels", self.weight.shape[0], c)
        pt, pl, pb, pr = self.pads
        size = [s * (i - 1) + d * (k - 1) + 1 + a - p0 - p1 for i, s, d, k, a, p0, p1 in
                zip((h, w), self.stride, self.dilation, self.kernel, self.output_padding, (pt, pl), (pb, pr))]
        if min(size) < 1:
            raise self.shape_error(f"pads {self.pads} crop the whole {h}x{w} output", ">= 1x1 output", tuple(size))
        self.in_hw = (h, w)
        return [(n, self.p["num_output"]) + tuple(size)]

    def summary(self):
        p = self.p
        s = f"{pair_text(p['kernel_size'])}, {p['num_output']}"
        if as_pair(p["stride"], "stride") != (1, 1):
            s += f", stride {pair_text(p['stride']) if isinstance(p['stride'], (list, tuple)) else p['stride']}"
        if p["group"] != 1:
            s += f", group {p['group']}"
        return s

    def macs(self, bottom_shapes, top_shapes):
        _, c, h, w = bottom_shapes[0]
        return h * w * c * (self.p["num_output"] // self.p["group"]) * self.kernel[0] * self.kernel[1]

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) if self.p["bias_term"] else 0

    def _matrices(self, x):
        """x as (group, C/group, N H W) and W as (group, C/group, K/group kh kw)."""
        n, c, h, w = x.shape
        g = self.p["group"]
        xm = x.reshape(n, g, c // g, h * w).transpose(1, 2, 0, 3).reshape(g, c // g, n * h * w)
        return xm, self.weight.data.reshape(g, c // g, -1)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        xm, wm = self._matrices(x)
        cols = np.matmul(wm.transpose(0, 2, 1), xm).reshape(-1, xm.shape[2])
        kernels.col2im(np.ascontiguousarray(cols), y, self.kernel, self.stride, self.pads, self.dilation, self.in_hw)
        if self.bias is not None:
            y += self.bias.data.reshape(1, -1, 1, 1)

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        xm, wm = self._matrices(x)
        g = self.p["group"]
        dcols = np.empty((wm.shape[0] * wm.shape[2], xm.shape[2]), dy.dtype)
        kernels.im2col(np.ascontiguousarray(dy), dcols, self.kernel, self.stride, self.pads, self.dilation,
                       self.in_hw)
        dcols = dcols.reshape(g, wm.shape[2], -1)
        self.weight.diff[...] = np.matmul(xm, dcols.transpose(0, 2, 1)).reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.diff[...] = dy.sum(axis=(0, 2, 3))
        if propagate_down[0]:
            n, c, h, w = x.shape
            dx = np.matmul(wm, dcols).reshape(g, c // g, n, h * w).transpose(2, 0, 1, 3)
            bottom[0].diff[...] = dx.reshape(x.shape)

    def to_onnx(self, g):
        args = [g.inputs[0], g.const(f"{self.name}.weight", g.params["weight"])]
        if "bias" in g.params:
            args.append(g.const(f"{self.name}.bias", g.params["bias"]))
        g.node("ConvTranspose", args, g.outputs, self.name, kernel_shape=list(self.kernel),
               strides=list(self.stride), dilations=list(self.dilation), group=int(self.p["group"]),
               pads=list(self.pads), output_padding=list(self.output_padding))

    @classmethod
    def to_caffe(cls, p, w):
        """Caffe's Deconvolution (convolution_param): symmetric pads, no output_padding."""
        if tuple(as_pair(p["output_padding"], "output_padding")) != (0, 0):
            raise w.refuse(f"Caffe's Deconvolution has no output_padding ({p['output_padding']})")
        write_convolution_param(p, w, "Deconvolution")


# ---- ONNX -> decaf ------------------------------------------------------------------------------
@onnx_importer("ConvTranspose")
def _deconv_from_onnx(imp, node):
    """2-D; pads, output_padding, strides, dilations, group; output_shape and auto_pad SAME only when
    they come to fixed pads (known input size)."""
    a = imp.attrs(node)
    w = imp.need_const(node, 1, "the weight")
    if w.ndim != 4:
        raise imp.fail(f"node {imp.label(node)}: only 2-D ConvTranspose is supported (weight shape {w.shape})")
    b = imp.need_const(node, 2, "the bias").reshape(-1) if imp.has_input(node, 2) else None
    kernel = [int(k) for k in a.get("kernel_shape", w.shape[2:])]
    if tuple(kernel) != tuple(w.shape[2:]):
        raise imp.fail(f"node {imp.label(node)}: kernel_shape {kernel} does not match the weight {w.shape}")
    stride = [int(s) for s in a.get("strides", [1, 1])]
    dilation = [int(d) for d in a.get("dilations", [1, 1])]
    output_padding = [int(v) for v in a.get("output_padding", [0, 0])]
    group = int(a.get("group", 1))
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise imp.fail(f"node {imp.label(node)}: unknown auto_pad {auto!r}")
    if auto == "VALID":
        pads = [0, 0, 0, 0]
    if len(pads) != 4 or len(stride) != 2 or len(dilation) != 2 or len(output_padding) != 2:
        raise imp.fail(f"node {imp.label(node)}: only 2-D ConvTranspose is supported")
    wanted = a.get("output_shape")
    if auto.startswith("SAME") or wanted is not None:
        shape = imp.shape(node.input[0])
        if shape is None or len(shape) != 4 or None in shape[2:]:
            raise imp.fail(f"node {imp.label(node)}: {'auto_pad ' + auto if wanted is None else 'output_shape'} "
                           f"needs the input size, which is unknown")
        wanted = [int(v) for v in wanted[-2:]] if wanted is not None else [s * i for s, i in zip(stride, shape[2:])]
        pads = _pads_for_output(shape[2:], wanted, kernel, stride, dilation, output_padding,
                                lower=auto != "SAME_UPPER")
        if min(pads) < 0:
            raise imp.fail(f"node {imp.label(node)}: output_shape {wanted} is larger than the full output")
    params = {"weight": w}
    if b is not None:
        params["bias"] = b
    imp.add(node, "Deconvolution", [node.input[0]], node.output[0], params, num_output=int(w.shape[1] * group),
            kernel_size=kernel, stride=stride, pad=pads, output_padding=output_padding, group=group,
            dilation=dilation, bias_term=b is not None)


def _pads_for_output(size, wanted, kernel, stride, dilation, output_padding, lower):
    """[top, left, bottom, right] that crop the full output to ``wanted``; the odd pixel is cropped at
    the start, except for SAME_UPPER (ONNX's rule for ConvTranspose, which ONNX Runtime follows)."""
    begin, end = [], []
    for i, o, k, s, d, a in zip(size, wanted, kernel, stride, dilation, output_padding):
        total = s * (i - 1) + a + (k - 1) * d + 1 - o
        small = total // 2
        begin.append(total - small if lower else small)
        end.append(small if lower else total - small)
    return begin + end


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("Deconvolution")
def _deconv_from_caffe(ctx, layer):
    """convolution_param, as conv.read_convolution_param says."""
    return read_convolution_param(ctx, layer, "Deconvolution")
