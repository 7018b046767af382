"""Convolution as im2col + one GEMM per group (depthwise: a direct kernel).

Parameters: num_output K; kernel_size k or [kh, kw]; stride (1); pad (0) as
int, [h, w] or [top, left, bottom, right]; pad_mode None or "same_upper" /
"same_lower" (TensorFlow SAME: pads computed from the input so that
Ho = ceil(H / stride), the odd extra pixel at the bottom/right for same_upper);
group (1); dilation (1); bias_term (True); weight_filler; bias_filler.

Shapes: x (N, C, H, W), W (K, C/group, kh, kw), b (K,), y (N, K, Ho, Wo),
Ho = floor((H + pad_top + pad_bottom - dh (kh - 1) - 1) / sh) + 1.

    forward:  cols = im2col(x)                (C kh kw, N Ho Wo)
              y_g  = W_g cols_g + b           one GEMM per group g
    backward: dW_g = dy_g cols_g^T;  db = sum of dy over N, Ho, Wo
              dcols_g = W_g^T dy_g;  dx = col2im(dcols)

The general case runs in one compiled kernel (kernels.conv_forward /
conv_backward, csrc/conv.c): each thread takes whole images, and runs im2col,
the GEMMs and the bias for them without waiting on the other threads. The
forward reads the weights packed for its kernel (direct, Winograd, grouped),
kept until the weight is next looked at. With stride 1 the input gradient is
itself a convolution (of dy with the flipped, transposed filters) and runs on
the forward's kernels instead of GEMM + col2im.
"""

import numpy as np

from .. import fillers, kernels
from ..errors import SpecError
from ..interop import caffe_importer, onnx_importer
from ..layer import REQUIRED, Epilogue, Layer, as_pads, as_pair, pair_text, per_image, register


def same_pads(size, kernel, stride, dilation, upper=True):
    """TensorFlow SAME padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small = total // 2
    return (small, total - small) if upper else (total - small, small)


def conv_out_size(size, kernel, stride, pad_before, pad_after, dilation):
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def grouped_channels(layer, bottom_shapes):
    """(input channels, num_output) of a convolution-like layer, its bottom checked to be 4-D and
    its input channels against its group."""
    c, g = layer.image_shape(bottom_shapes[0])[1], layer.p["group"]
    if c % g:
        raise layer.shape_error(f"input channels {c} not divisible by group {g}")
    return c, layer.p["num_output"]


def add_filters(layer, weight_shape, fill_rng):
    """The learnable weight (``weight_shape``) and, with bias_term, the bias (num_output) of a
    convolution-like layer, filled by its fillers."""
    layer.weight = layer.add_param("weight", weight_shape, 0)
    fillers.fill(layer.weight.data, layer.p["weight_filler"], fill_rng)
    layer.bias = None
    if layer.p["bias_term"]:
        layer.bias = layer.add_param("bias", (layer.p["num_output"],), 1)
        fillers.fill(layer.bias.data, layer.p["bias_filler"], fill_rng)


@register
class Convolution(Layer):
    type_name = "Convolution"
    group = "conv"
    roles = frozenset({"classifier"})
    absorbs_channel_affine = True      # weight (K, ...) and bias (K,): a following BatchNorm folds in
    gradcheck_case = ({"num_output": 3, "kernel_size": 3}, [(2, 3, 7, 7)])
    PARAMS = {"num_output": REQUIRED, "kernel_size": REQUIRED, "stride": 1, "pad": 0, "pad_mode": None,
              "group": 1, "dilation": 1, "bias_term": True,
              "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.0}}

    def validate(self):
        p = self.p
        self.kernel = as_pair(p["kernel_size"], f"layer {self.name!r}: kernel_size")
        self.stride = as_pair(p["stride"], f"layer {self.name!r}: stride")
        self.dilation = as_pair(p["dilation"], f"layer {self.name!r}: dilation")
        self.fixed_pads = as_pads(p["pad"], f"layer {self.name!r}: pad")
        if p["pad_mode"] not in (None, "same_upper", "same_lower"):
            raise SpecError(f"layer {self.name!r}: pad_mode must be same_upper or same_lower, got {p['pad_mode']!r}")
        if min(self.kernel + self.stride + self.dilation) < 1 or min(self.fixed_pads) < 0:
            raise SpecError(f"layer {self.name!r}: kernel, stride and dilation must be >= 1 and pads >= 0")
        if p["num_output"] % p["group"]:
            raise SpecError(f"layer {self.name!r}: num_output {p['num_output']} not divisible by group {p['group']}")

    def setup(self, bottom_shapes, fill_rng):
        c, k = grouped_channels(self, bottom_shapes)
        add_filters(self, (k, c // self.p["group"]) + self.kernel, fill_rng)

    def reshape(self, bottom_shapes):
        shape = self.image_shape(bottom_shapes[0])
        n, c, h, w = shape
        g, k = self.p["group"], self.p["num_output"]
        if c != self.weight.shape[1] * g:
            raise self.shape_error(f"bottom {self.bottom_names[0]!r} channels", self.weight.shape[1] * g, c)
        if self.p["pad_mode"]:
            upper = self.p["pad_mode"] == "same_upper"
            pt, pb = same_pads(h, self.kernel[0], self.stride[0], self.dilation[0], upper)
            pl, pr = same_pads(w, self.kernel[1], self.stride[1], self.dilation[1], upper)
            self.pads = (pt, pl, pb, pr)
        else:
            self.pads = self.fixed_pads
        pt, pl, pb, pr = self.pads
        ho = conv_out_size(h, self.kernel[0], self.stride[0], pt, pb, self.dilation[0])
        wo = conv_out_size(w, self.kernel[1], self.stride[1], pl, pr, self.dilation[1])
        if ho < 1 or wo < 1:
            raise self.shape_error(f"input {h}x{w} is too small for kernel {self.kernel}", ">= 1x1 output", (ho, wo))
        self.out_hw = (ho, wo)
        self.depthwise = g == c == k and g > 1
        self.work = None    # scratch for im2col, allocated at the first pass (see _work)
        return [(n, k, ho, wo)]

    def summary(self):
        p = self.p
        s = f"{pair_text(p['kernel_size'])}, {p['num_output']}"
        if p["stride"] != 1:
            s += f", /{pair_text(p['stride']) if isinstance(p['stride'], (list, tuple)) else p['stride']}"
        if p["pad"] not in (0, [0], [0, 0], [0, 0, 0, 0]) or p["pad_mode"]:
            s += f", pad {p['pad_mode'] or p['pad']}"
        if p["group"] != 1:
            s += f", group {p['group']}"
        return s

    def macs(self, bottom_shapes, top_shapes):
        _, k, ho, wo = top_shapes[0]
        kh, kw = self.kernel
        return ho * wo * k * (bottom_shapes[0][1] // self.p["group"]) * kh * kw

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) if self.p["bias_term"] else 0

    @classmethod
    def to_caffe(cls, p, w):
        """Caffe's Convolution: symmetric pads only, no SAME padding."""
        if p["pad_mode"]:
            raise w.refuse(f"Caffe has no SAME padding (pad_mode {p['pad_mode']!r})")
        write_convolution_param(p, w, "Convolution")

    # Set by fuse_epilogue when the activation reading this top is one the kernels apply as they write
    # (csrc/activation.h: ReLU, ReLU6, Clip, LeakyReLU, HardSwish, SiLU, Sigmoid): in place, or into the
    # activation's own top (fused_relu_blob), this top keeping the values before it. fused_relu says
    # whether one is (the name is older than the other kinds); fused_act is its (kind, lo, hi, alpha).
    fused_relu = False
    fused_relu_max = float("inf")
    fused_relu_blob = None
    fused_act = None
    # Set by fuse_residual on the graph optimizer's copy: a blob added before the activation
    fused_residual = None

    def fuse_epilogue(self, epilogue, in_place, out_blob):
        """The kernels apply every Epilogue kind, in place or into out_blob."""
        if epilogue.kind not in Epilogue.KINDS:
            return False
        self.fused_relu, self.fused_relu_blob, self.fused_act = True, out_blob, epilogue.act
        self.fused_relu_max = epilogue.hi
        return True

    # Set by fuse_channel_means on the graph optimizer's copy: the blob (N, C, 1, 1) a depthwise
    # kernel writes each output plane's mean into (the global average pooling after it)
    fused_means = None

    def fuse_channel_means(self, blob):
        """The depthwise kernel computes each plane's mean as it finishes it (csrc/depthwise.c: the
        same floats as the pooling kernel); the other kernels do not."""
        if not self.depthwise:
            return False
        self.fused_means = blob
        return True

    def fuse_residual(self, blob):
        """Add blob before the activation; not after one was fused (that would add after it)."""
        if self.fused_relu:
            return False
        self.fused_residual = blob
        return True

    def _geometry(self):
        """(group, kernel, stride, pads, dilation, out_hw): the kernels' arguments after x and w."""
        return self.p["group"], self.kernel, self.stride, self.pads, self.dilation, self.out_hw

    def _asked(self, question, x, w, *args, geometry=None):
        """kernels.<question>(x, w, geometry..., *args), kept per shapes and kernels.plan_key():
        the plan's answers cost more than a small layer's arithmetic (tens of microseconds).
        geometry: another convolution's (backward's input gradient), else this layer's."""
        geometry = geometry or self._geometry()
        key = (question, x.shape, x.dtype.char, w.shape, geometry, args, kernels.plan_key())
        answers = self.__dict__.setdefault("_answers", {})
        if key not in answers:
            if len(answers) > 16:
                answers.clear()
            answers[key] = getattr(kernels, question)(x, w, *geometry, *args)
        return answers[key]

    def _work(self, x, w, backward, prepacked=False, geometry=None):
        """The reused scratch buffer for the fused kernels, grown if the thread count grew."""
        size = self._asked("conv_work_size", x, w, backward, prepacked, geometry=geometry)
        if self.work is None or self.work.size < size or self.work.dtype != x.dtype:
            self.work = np.empty(max(size, 1), x.dtype)
        return self.work

    # (the weight's touched count after the call that used them, the weight array, {kind: array}):
    # the weights in each form a plan asked for (direct, Winograd, grouped: the form can change with
    # the batch size), kept between calls
    _packed = None

    def _packed_weights(self, x, w, touched_before):
        """(kind, array) for conv_forward's packed=: the kept packing of the form the plan wants
        while nothing but this layer looked at the weight since, else a new one (the other forms
        are dropped then)."""
        kind, size = self._asked("conv_packing", x, w)
        if not kind:
            return None
        kept = self._packed
        forms = kept[2] if kept is not None and kept[0] == touched_before and kept[1] is w else {}
        array = forms.get(kind)
        if array is None or array.size != size:
            array = np.empty(size, np.float32)
            kernels.conv_pack(x, w, array, *self._geometry())
            forms = {**forms, kind: array}          # (a new dict: shallow copies of the layer share the old)
        self._packed = (self.weight.touched, w, forms)
        return kind, array

    def _call_key(self, x, y, act, act_out, residual, means):
        """What a kept kernel call depends on: the arrays (by identity: the call keeps them alive, so
        an id is not reused meanwhile), the epilogue, the parameters (as objects: a folded copy of
        this layer has its own) with their touched counts (nobody looked at them since), and the
        thread count, instruction set and backend."""
        return (id(x), id(y), id(act_out), id(residual), id(means), act, self.weight, self.bias,
                self.weight.touched, None if self.bias is None else self.bias.touched, kernels.plan_key())

    def _kept_call(self, *arrays):
        """The kernel call made last time, checked and planned, if nothing it depends on changed
        (a net makes the same calls every pass; checking one costs as much as a small layer's
        arithmetic at batch 1); else None."""
        kept = self.__dict__.get("_call")
        return kept[1] if kept is not None and kept[0] == self._call_key(*arrays) else None

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        act = (self.fused_act or ("clamp", 0.0, self.fused_relu_max, 0.0)) if self.fused_relu else None
        act_out = None if self.fused_relu_blob is None or act is None else self.fused_relu_blob.data
        residual = None if self.fused_residual is None else self.fused_residual.data
        means = None if self.fused_means is None else self.fused_means.data
        call = self._kept_call(x, y, act, act_out, residual, means)
        if call is None:
            touched = self.weight.touched
            w = self.weight.data
            bias = None if self.bias is None else self.bias.data
            if self.depthwise:
                call = kernels.prepare_depthwise_conv_forward(x, w, y, self.stride, self.pads, self.dilation,
                                                              bias, act=act, residual=residual, relu_out=act_out,
                                                              means=means)
            else:
                packed = self._packed_weights(x, w, touched)
                work = self._work(x, w, False, packed is not None)
                call = kernels.prepare_conv_forward(x, w, bias, y, work, self.kernel, self.stride, self.pads,
                                                    self.dilation, self.p["group"], act=act, relu_out=act_out,
                                                    residual=residual, packed=packed)
            self._call = (self._call_key(x, y, act, act_out, residual, means), call)   # (counts after the look-ups)
        call.run()

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        g = self.p["group"]
        dx = bottom[0].diff if propagate_down[0] else None
        if self.depthwise:
            if self.bias is not None:
                self.bias.diff[...] = dy.sum(axis=(0, 2, 3))
            kernels.depthwise_conv_backward(x, self.weight.data, dy, dx, self.weight.diff,
                                            self.stride, self.pads, self.dilation)
            return
        db = None if self.bias is None else self.bias.diff
        w = self.weight.data
        transposed = self._transposed_geometry(x) if dx is not None else None
        if transposed is not None:
            wt = self._transposed_weights(w)
            packed = self._asked("conv_packing", dy, wt, geometry=transposed)
            if packed[0] and self._packing_pays(packed[0], dy):   # direct or Winograd takes the input gradient
                kernels.conv_backward(x, w, dy, None, self.weight.diff, db, self._work(x, w, "weights"),
                                      self.kernel, self.stride, self.pads, self.dilation, g, weights_only=True)
                self._input_gradient(dy, wt, dx, transposed, packed)
                return
        kernels.conv_backward(x, w, dy, dx, self.weight.diff, db, self._work(x, w, True),
                              self.kernel, self.stride, self.pads, self.dilation, g)

    # ---- the input gradient of a stride-1 convolution as a forward convolution ----------------
    # dx[c, i, j] = sum over k, u, v of dy[k, i + pt - u, j + pl - v] w[k, c, u, v]: a convolution of dy
    # (channels K) with w transposed (c <-> k within each group) and flipped (u -> kh - 1 - u), padded
    # kh - 1 - pt above and so on, so the forward's fast kernels (direct, Winograd) compute it.
    def _transposed_geometry(self, x):
        """The geometry (as _geometry) of that convolution, or None where it does not apply
        (strides or dilations above 1, pads beyond kernel - 1, or not the compiled float32 path)."""
        (kh, kw), (pt, pl, pb, pr) = self.kernel, self.pads
        if self.stride != (1, 1) or self.dilation != (1, 1) or x.dtype != np.float32:
            return None
        if max(pt, pb) > kh - 1 or max(pl, pr) > kw - 1:
            return None
        pads = (kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr)
        return self.p["group"], self.kernel, (1, 1), pads, (1, 1), tuple(x.shape[2:])

    @staticmethod
    def _packing_pays(kind, dy):
        """Whether packing the transposed filters for this one call pays: Winograd's transform (36
        values per filter) only from 64 tiles of 4x4 outputs on (ResNet's 512 x 512 at 7x7, batch 4:
        15.7 ms against GEMM + col2im's 8.9; batch 32: 46.5 against 80.3, benchmarks/bench_backward.py)."""
        if kind % 16 != kernels.PACK_WINOGRAD:
            return True
        n, _, h, w = dy.shape
        return n * -(-h // 4) * -(-w // 4) >= 64

    def _transposed_weights(self, w):
        """w (K, C/g, kh, kw) as (C, K/g, kh, kw): transposed within each group and flipped."""
        g = self.p["group"]
        k, cg, kh, kw = w.shape
        t = w.reshape(g, k // g, cg, kh, kw).transpose(0, 2, 1, 3, 4)[:, :, :, ::-1, ::-1]
        return np.ascontiguousarray(t).reshape(g * cg, k // g, kh, kw)

    def _input_gradient(self, dy, wt, dx, geometry, packing):
        """dx = the forward convolution of dy with wt (packed afresh: the weights change every step,
        into a buffer kept between calls: a new one each step would fault in up to 38 MB of pages)."""
        kind, size = packing
        packed = self.__dict__.get("_dgrad_packed")
        if packed is None or packed.size != size:
            packed = self._dgrad_packed = np.empty(size, np.float32)
        kernels.conv_pack(dy, wt, packed, *geometry)
        group, kernel, stride, pads, dilation, _ = geometry
        work = self._work(dy, wt, False, True, geometry=geometry)
        kernels.conv_forward(dy, wt, None, dx, work, kernel, stride, pads, dilation, group,
                             packed=(kind, packed))

    def to_onnx(self, g):
        args = [g.inputs[0], g.const(f"{self.name}.weight", g.params["weight"])]
        if "bias" in g.params:
            args.append(g.const(f"{self.name}.bias", g.params["bias"]))
        attrs = {"kernel_shape": list(self.kernel), "strides": list(self.stride),
                 "dilations": list(self.dilation), "group": int(self.p["group"])}
        if self.p["pad_mode"]:
            attrs["auto_pad"] = self.p["pad_mode"].upper()
        else:
            attrs["pads"] = list(self.fixed_pads)
        g.node("Conv", args, g.outputs, self.name, **attrs)


# ---- ONNX -> decaf ------------------------------------------------------------------------------
def pads_from_onnx(imp, node, attrs, allow_same_mode, kernel=None, stride=None):
    """The spec keys for ONNX's pads / auto_pad (Conv and the pools): {"pad": ...} or {"pad_mode": ...}.
    Without ``allow_same_mode`` SAME is turned into fixed pads, which needs the input size."""
    auto = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise imp.fail(f"node {imp.label(node)}: pads {pads}: only 2-D is supported")
        return {"pad": pads}                 # ONNX (begin h, begin w, end h, end w), decaf's order too
    if auto == "VALID":
        return {"pad": 0}
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise imp.fail(f"node {imp.label(node)}: unknown auto_pad {auto!r}")
    if allow_same_mode:
        return {"pad_mode": auto.lower()}
    shape = imp.shape(node.input[0])
    if shape is None or len(shape) != 4 or None in shape[2:]:
        raise imp.fail(f"node {imp.label(node)}: auto_pad {auto} needs the input size, which is unknown")
    upper = auto == "SAME_UPPER"
    pt, pb = same_pads(shape[2], kernel[0], stride[0], 1, upper)
    pl, pr = same_pads(shape[3], kernel[1], stride[1], 1, upper)
    return {"pad": [pt, pl, pb, pr]}


@onnx_importer("Conv")
def _conv_from_onnx(imp, node):
    a = imp.attrs(node)
    w = imp.need_const(node, 1, "the weight")
    if w.ndim != 4:
        raise imp.fail(f"node {imp.label(node)}: only 2-D convolution is supported (weight shape {w.shape})")
    b = imp.const(node.input[2]) if imp.has_input(node, 2) else None
    if imp.has_input(node, 2) and b is None:
        raise imp.fail(f"node {imp.label(node)}: the bias must be a constant")
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    if tuple(kernel) != tuple(w.shape[2:]):
        raise imp.fail(f"node {imp.label(node)}: kernel_shape {kernel} does not match the weight {w.shape}")
    kw = {"num_output": int(w.shape[0]), "kernel_size": [int(k) for k in kernel],
          "stride": [int(s) for s in a.get("strides", [1, 1])],
          "dilation": [int(d) for d in a.get("dilations", [1, 1])], "group": int(a.get("group", 1)),
          "bias_term": b is not None}
    kw.update(pads_from_onnx(imp, node, a, allow_same_mode=True))
    params = {"weight": w}
    if b is not None:
        params["bias"] = b.reshape(-1)
    imp.add(node, "Convolution", [node.input[0]], node.output[0], params, **kw)


# ---- Caffe -> decaf -----------------------------------------------------------------------------
def write_convolution_param(p, w, caffe_type):
    """A Caffe layer of ``caffe_type`` (Convolution, Deconvolution) with its convolution_param from
    the decaf spec ``p``: symmetric pads only."""
    cp = {"num_output": int(p["num_output"])}
    if not p["bias_term"]:
        cp["bias_term"] = False
    w.hw(cp, "pad", w.symmetric_pads(p["pad"]), skip=0, repeated=True)
    w.hw(cp, "kernel_size", p["kernel_size"], repeated=True)
    if p["group"] != 1:
        cp["group"] = int(p["group"])
    w.hw(cp, "stride", p["stride"], skip=1, repeated=True)
    dh, dw = as_pair(p["dilation"], "dilation")
    if (dh, dw) != (1, 1):
        cp["dilation"] = [dh] if dh == dw else [dh, dw]      # Caffe has no dilation_h/_w
    w.add(caffe_type, ["weight", "bias"] if p["bias_term"] else ["weight"], multipliers=True,
          convolution_param=cp)


def read_convolution_param(ctx, layer, decaf_type):
    """A decaf layer of ``decaf_type`` from a Caffe layer's convolution_param: pad/kernel/stride/
    dilation as one value, [h, w] or *_h/*_w; group; bias_term."""
    p = layer.param("convolution_param")
    ctx.axis_one(p.get("axis"))
    d = {"type": decaf_type, "num_output": ctx.positive(p, "num_output"),
         "kernel_size": ctx.hw(p, "kernel_size", None), "stride": ctx.hw(p, "stride", 1),
         "pad": ctx.hw(p, "pad", 0), "group": p.get("group", 1) or 1, "dilation": ctx.hw(p, "dilation", 1)}
    bias = p.get("bias_term", True)
    if not bias:
        d["bias_term"] = False
    ctx.weights(["weight", "bias"] if bias else ["weight"])
    return {**d, **ctx.multipliers()}


@caffe_importer("Convolution")
def _conv_from_caffe(ctx, layer):
    """convolution_param, as read_convolution_param says."""
    return read_convolution_param(ctx, layer, "Convolution")
