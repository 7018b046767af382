"""InnerProduct (fully connected).

Parameters: num_output; bias_term (default True); weight_filler, bias_filler.
The bottom (N, ...) is flattened to x of shape (N, D).

    forward:  y = x W^T + b              W: (num_output, D), b: (num_output,)
    backward: dx = dy W;  dW = dy^T x;  db = sum over the batch of dy

An activation reading the top (ReLU, HardSwish, ... : ``decaf.layer.Epilogue``) is applied with
the bias in one compiled pass (``fuse_epilogue``), in place or into the activation's own top.
"""
import numpy as np

from .. import fillers, kernels
from ..blas import gemm
from ..interop import caffe_importer, onnx_importer
from ..layer import REQUIRED, Layer, per_image, register


@register
class InnerProduct(Layer):
    type_name = "InnerProduct"
    group = "fc"
    roles = frozenset({"classifier"})
    absorbs_channel_affine = True      # weight (out, in) and bias (out,): a following BatchNorm folds in
    gradcheck_case = ({"num_output": 4}, [(3, 2, 2, 2)])

    def summary(self):
        return str(self.p["num_output"])

    def macs(self, bottom_shapes, top_shapes):
        return per_image(bottom_shapes[0]) * self.p["num_output"]

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0]) if self.p["bias_term"] else 0

    @classmethod
    def to_caffe(cls, p, w):
        ip = {"num_output": int(p["num_output"])}
        if not p["bias_term"]:
            ip["bias_term"] = False
        w.add("InnerProduct", ["weight", "bias"] if p["bias_term"] else ["weight"], multipliers=True,
              inner_product_param=ip)
    PARAMS = {"num_output": REQUIRED, "bias_term": True,
              "weight_filler": {"type": "xavier"}, "bias_filler": {"type": "constant", "value": 0.0}}

    def setup(self, bottom_shapes, fill_rng):
        d = int(np.prod(bottom_shapes[0][1:]))
        self.weight = self.add_param("weight", (self.p["num_output"], d), 0)
        fillers.fill(self.weight.data, self.p["weight_filler"], fill_rng)
        self.bias = None
        if self.p["bias_term"]:
            self.bias = self.add_param("bias", (self.p["num_output"],), 1)
            fillers.fill(self.bias.data, self.p["bias_filler"], fill_rng)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        d = int(np.prod(shape[1:]))
        if d != self.weight.shape[1]:
            raise self.shape_error(f"bottom {self.bottom_names[0]!r} has {d} features per example "
                                   f"(shape {shape}) but the weights take", self.weight.shape[1], d)
        return [(shape[0], self.p["num_output"])]

    fused_act = None         # the fused activation's (kind, lo, hi, alpha) (decaf.layer.Epilogue.act)
    fused_act_blob = None    # its top when that is a new blob (this top then keeps the values before it)

    def fuse_epilogue(self, epilogue, in_place, out_blob):
        """Every Epilogue kind, in place or into out_blob (see forward)."""
        self.fused_act, self.fused_act_blob = epilogue.act, out_blob
        return True

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        gemm(x, self.weight.data.T, top[0].data)
        if self.fused_act is not None:
            self._bias_and_activation(top[0].data)
        elif self.bias is not None:
            top[0].data += self.bias.data

    def _bias_and_activation(self, y):
        """y + b, then the fused activation (in y, or into its own top): y (N, K) taken as N images
        of K one-pixel channels by the compiled channel affine (y * 1 + b), one pass."""
        ones = self.__dict__.get("_ones")
        if ones is None or ones.shape != y.shape[1:] or ones.dtype != y.dtype:
            ones = self._ones = np.ones(y.shape[1:], y.dtype)
        bias = None if self.bias is None else self.bias.data
        planes = (y.shape[0], y.shape[1], 1, 1)
        out = None if self.fused_act_blob is None else self.fused_act_blob.data.reshape(planes)
        y = y.reshape(planes)
        kernels.channel_affine(y, ones, bias, y, act=self.fused_act, act_out=out)

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        dy = top[0].diff
        gemm(dy.T, x, self.weight.diff)
        if self.bias is not None:
            np.sum(dy, axis=0, out=self.bias.diff)
        if propagate_down[0]:
            gemm(dy, self.weight.data, bottom[0].diff.reshape(x.shape))

    def to_onnx(self, g):
        """Gemm(x, W, b) with transB, after a Flatten when the bottom is not 2-D."""
        x = g.inputs[0]
        if len(g.input_shapes[0]) != 2:
            x = f"{self.name}:flat"
            g.node("Flatten", g.inputs, [x], f"{self.name}_flatten", axis=1)
        args = [x, g.const(f"{self.name}.weight", g.params["weight"])]
        if "bias" in g.params:
            args.append(g.const(f"{self.name}.bias", g.params["bias"]))
        g.node("Gemm", args, g.outputs, self.name, transB=1)


# ---- ONNX -> decaf ------------------------------------------------------------------------------
@onnx_importer("Gemm")
def _gemm_from_onnx(imp, node):
    """alpha and beta are folded into W and b; transB either way, transA refused."""
    a = imp.attrs(node)
    if a.get("transA", 0):
        raise imp.fail(f"node {imp.label(node)}: Gemm with transA is not supported")
    w = imp.need_const(node, 1, "B (the weight)").astype(np.float64)
    if w.ndim != 2:
        raise imp.fail(f"node {imp.label(node)}: B must be 2-D, got shape {w.shape}")
    if not a.get("transB", 0):
        w = w.T
    w = w * float(a.get("alpha", 1.0))
    n = w.shape[0]
    params = {"weight": w}
    if imp.has_input(node, 2):
        c = imp.need_const(node, 2, "C (the bias)").astype(np.float64) * float(a.get("beta", 1.0))
        if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            raise imp.fail(f"node {imp.label(node)}: C of shape {c.shape} is not a bias of size {n}")
        params["bias"] = np.broadcast_to(c.reshape(-1), (n,))
    imp.add(node, "InnerProduct", [node.input[0]], node.output[0], params, num_output=int(n),
            bias_term="bias" in params)


@onnx_importer("MatMul")
def _matmul_from_onnx(imp, node):
    """A 2-D input times a constant matrix; an Add of a constant vector right after is its bias.
    An N-D input (N, ..., C) (ConvNeXt's channels-last Linear, a transformer's (N, L, C)) becomes
    Transpose to channels first, a 1x1 Convolution (with a Reshape to 4-D and back unless it is
    4-D already) and Transpose back."""
    w = imp.need_const(node, 1, "the second operand (the weight)")
    if w.ndim != 2:
        raise imp.fail(f"node {imp.label(node)}: MatMul by a constant of shape {w.shape}: only 2-D "
                       f"weights are supported")
    rank = imp.rank(node.input[0], node, "MatMul")
    n = w.shape[1]
    params = {"weight": w.T}
    top = node.output[0]
    nxt = imp.sole_consumer(top)
    if nxt is not None and nxt.op_type == "Add" and len(nxt.input) == 2:
        c = imp.const(nxt.input[1] if nxt.input[0] == top else nxt.input[0])
        if c is not None and c.size == n and c.ndim <= 2 and c.shape[-1] == n:
            params["bias"] = c.reshape(-1)
            imp.absorb(nxt)
            top = nxt.output[0]
    if rank == 2:
        imp.add(node, "InnerProduct", [node.input[0]], top, params, num_output=int(n), bias_term="bias" in params)
        return
    if rank < 2:
        raise imp.fail(f"node {imp.label(node)}: MatMul of a {rank}-D input is not supported")
    inner = list(imp.shape_at(node.input[0], 1)[1:-1])          # the axes between the batch and C
    params["weight"] = params["weight"].reshape(n, -1, 1, 1)
    x = f"{top}:channels_first"
    imp.add(node, "Transpose", [node.input[0]], x, perm=[0, rank - 1] + list(range(1, rank - 1)))
    if rank != 4:
        imp.add(node, "Reshape", [x], f"{top}:4d", shape=[int(w.shape[0]), int(np.prod(inner)), 1])
        x = f"{top}:4d"
    y = f"{top}:conv"
    imp.add(node, "Convolution", [x], y, params, num_output=int(n), kernel_size=1, bias_term="bias" in params)
    if rank != 4:
        imp.add(node, "Reshape", [y], f"{top}:nd", shape=[int(n)] + inner)
        y = f"{top}:nd"
    imp.add(node, "Transpose", [y], top, perm=[0] + list(range(2, rank)) + [1])


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("InnerProduct")
def _ip_from_caffe(ctx, layer):
    """inner_product_param: num_output, bias_term; transpose: the weight blob is stored (in, out)."""
    p = layer.param("inner_product_param")
    ctx.axis_one(p.get("axis"))
    d = {"type": "InnerProduct", "num_output": ctx.positive(p, "num_output")}
    bias = p.get("bias_term", True)
    if not bias:
        d["bias_term"] = False
    ctx.weights(["weight", "bias"] if bias else ["weight"], transposed=["weight"] if p.get("transpose") else [])
    return {**d, **ctx.multipliers()}
