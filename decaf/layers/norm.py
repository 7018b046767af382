"""Per-channel normalisation layers: BatchNorm and Scale (channel axis 1).

BatchNorm (parameters eps=1e-5, momentum=0.9, use_global_stats, affine):
    statistics over every axis but the channel one (m values per channel)
    train: mu, var = batch mean and (biased) variance; the running statistics
           move as r = momentum * r + (1 - momentum) * batch (unbiased variance)
    test:  mu, var = the running statistics (``use_global_stats`` forces either way)
    xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta if affine else xhat
    backward with batch statistics:
        dxhat = dy * gamma
        dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)
    with global statistics: dx = dxhat / sqrt(var + eps)
    dgamma = sum(dy * xhat), dbeta = sum(dy)

Scale (parameter bias_term=False): y = x * gamma_c (+ beta_c);
    dx = dy * gamma_c;  dgamma_c = sum(dy * x);  dbeta_c = sum(dy)

Both write y = x s_c + t_c in one pass (csrc/channel_affine.c; BatchNorm with global statistics
as s = gamma / sqrt(var + eps), t = beta - s mu), applying the activation that reads their top
when the net or the graph optimizer fuses it (``fuse_epilogue``: BN -> ReLU is one pass).
BatchNorm with batch statistics runs csrc/batchnorm.c: forward computes mu, var and writes y (and
the fused activation) channel by channel; backward recomputes xhat from x, mu and var (no
full-size xhat is kept) and writes dgamma, dbeta and dx in the same sweep.
"""
import math

import numpy as np

from .. import fillers, kernels
from ..interop import caffe_importer, onnx_importer
from ..layer import Layer, per_image, register


def _per_channel(v, ndim):
    """View a (C,) vector so it broadcasts along axis 1 of an ndim array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _reduce_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def _nchw(a):
    """A view of a (B, C, ...) array as (B, C, rest, 1), the kernel's 4-D layout; never a copy (an
    output written through a copy would be lost: a non-contiguous array raises)."""
    if a.ndim == 4:
        return a
    v = a.view()
    v.shape = a.shape[:2] + (math.prod(a.shape[2:]), 1)
    return v


class _ChannelAffine(Layer):
    """What BatchNorm and Scale share: top = act(x s_c + t_c) in one pass, act the activation that
    reads the top when it was fused (``fuse_epilogue``), in place or into its own top."""
    fused_act = None         # its (kind, lo, hi, alpha) (decaf.layer.Epilogue.act)
    fused_act_blob = None    # its top when that is a new blob (this top then keeps the values before it)

    def fuse_epilogue(self, epilogue, in_place, out_blob):
        """Every Epilogue kind (csrc/activation.h), in place or into out_blob."""
        self.fused_act, self.fused_act_blob = epilogue.act, out_blob
        return True

    def reads_images_apart(self):
        """True: the affine kernel reads images apart; the batch-statistics path and backward copy
        or use NumPy."""
        return True

    def _write(self, x, scale, shift, top):
        act_out = None if self.fused_act_blob is None else _nchw(self.fused_act_blob.data)
        if not (x.ndim == 4 and x[:1].flags.c_contiguous):      # (4-D with its images apart: as it is)
            x = _nchw(np.ascontiguousarray(x))
        kernels.channel_affine(x, scale, shift, _nchw(top[0].data), act=self.fused_act, act_out=act_out)


@register
class BatchNorm(_ChannelAffine):
    type_name = "BatchNorm"
    group = "norm"
    unit_params = ("weight",)
    gradcheck_case = ({"affine": True}, [(3, 2, 2, 2)])

    def ops(self, bottom_shapes, top_shapes):
        return 2 * per_image(top_shapes[0])
    PARAMS = {"eps": 1e-5, "momentum": 0.9, "use_global_stats": None, "affine": False}
    inplace_ok = False
    normalises = True

    @classmethod
    def affine_at_inference(cls, p):
        return p["use_global_stats"] is not False     # false: batch statistics even at test time

    @classmethod
    def inference_affine(cls, p, get):
        """s = gamma / sqrt(var + eps), t = beta - s mean (gamma 1, beta 0 without affine)."""
        mean, var = get("mean"), get("var")
        gamma, beta = (get("weight"), get("bias")) if p["affine"] else (1.0, 0.0)
        s = gamma / np.sqrt(var + float(p["eps"]))
        return s, beta - s * mean

    @classmethod
    def to_caffe(cls, p, w):
        """Caffe's BatchNorm holds (mean, var, scale factor 1) and no affine: a Scale layer follows."""
        bp = {"eps": float(p["eps"])}
        if p["use_global_stats"] is not None:
            bp["use_global_stats"] = bool(p["use_global_stats"])
        w.add("BatchNorm", ["mean", "var", np.ones(1, np.float32)], batch_norm_param=bp)
        if p["affine"]:
            w.add("Scale", ["weight", "bias"], name=f"{p['name']}_scale", bottom=w.top, top=w.top,
                  scale_param={"bias_term": True})

    def setup(self, bottom_shapes, fill_rng):
        c = bottom_shapes[0][1]
        self.mean = self.add_param("mean", (c,), 0, learnable=False)
        self.var = self.add_param("var", (c,), 1, learnable=False)
        self.var.data[...] = 1
        if self.p["affine"]:
            self.gamma = self.add_param("weight", (c,), 2)
            self.beta = self.add_param("bias", (c,), 3)
            fillers.fill(self.gamma.data, {"type": "constant", "value": 1.0}, fill_rng)

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2 or bottom_shapes[0][1] != self.mean.shape[0]:
            raise self.shape_error("channel count", self.mean.shape[0], bottom_shapes[0])
        return [bottom_shapes[0]]

    def _global(self):
        g = self.p["use_global_stats"]
        return self.phase == "test" if g is None else bool(g)

    _batch = None               # (mean, var) of a forward with batch statistics, for backward
    _st = None                  # the (2, C) buffer of s and t
    _stats = None               # the (2, C) buffer of the batch mean and variance

    def _affine(self, dtype):
        """(gamma, beta) in ``dtype``, or (None, None) without affine."""
        if not self.p["affine"]:
            return None, None
        return np.asarray(self.gamma.data, dtype), np.asarray(self.beta.data, dtype)

    def _scale_shift(self, dtype):
        """s = gamma / sqrt(var + eps) and t = beta - s mean of the global statistics, in ``dtype``,
        into a buffer kept from one forward to the next."""
        c = self.mean.shape[0]
        if self._st is None or self._st.dtype != dtype or self._st.shape[1] != c:
            self._st = np.empty((2, c), dtype)
        s, t = self._st
        kernels.batchnorm_scale_shift(np.asarray(self.mean.data, dtype), np.asarray(self.var.data, dtype),
                                      *self._affine(dtype), float(self.p["eps"]), s, t)
        return s, t

    def forward(self, bottom, top):
        x = bottom[0].data
        if self._global():            # y = x s + t: one pass; backward recomputes xhat from x
            self._batch = None
            self._write(x, *self._scale_shift(x.dtype), top)
            return
        # batch statistics: one kernel (csrc/batchnorm.c) writes mu, var and y (with the fused
        # activation); backward recomputes xhat from x, mu and var
        c = x.shape[1]
        if self._stats is None or self._stats.dtype != x.dtype or self._stats.shape[1] != c:
            self._stats = np.empty((2, c), x.dtype)
        mu, var = self._batch = self._stats
        act_out = None if self.fused_act_blob is None else _nchw(self.fused_act_blob.data)
        kernels.batchnorm_train_forward(_nchw(np.ascontiguousarray(x)), *self._affine(x.dtype), _nchw(top[0].data),
                                        mu, var, float(self.p["eps"]), act=self.fused_act, act_out=act_out)
        m = x.size // c
        mom = self.p["momentum"]
        self.mean.data[...] = mom * self.mean.data + (1 - mom) * mu
        self.var.data[...] = mom * self.var.data + (1 - mom) * var * m / max(m - 1, 1)

    def backward(self, top, propagate_down, bottom):
        dy, x = top[0].diff, bottom[0].data
        dx = bottom[0].diff if propagate_down[0] else None
        if self._batch is not None:
            c = x.shape[1]
            gamma, _ = self._affine(dy.dtype)
            dgamma, dbeta = (np.empty(c, dy.dtype), np.empty(c, dy.dtype)) if self.p["affine"] else (None, None)
            kernels.batchnorm_train_backward(_nchw(np.ascontiguousarray(x)), _nchw(np.ascontiguousarray(dy)),
                                             *self._batch, gamma, None if dx is None else _nchw(dx), dgamma,
                                             dbeta, float(self.p["eps"]))
            if self.p["affine"]:
                self.gamma.diff[...], self.beta.diff[...] = dgamma, dbeta
            return
        # global statistics: dx = gamma dy / sqrt(var + eps)
        axes, nd = _reduce_axes(dy.ndim), dy.ndim
        inv_std = 1.0 / np.sqrt(self.var.data + self.p["eps"]).astype(x.dtype)
        if self.p["affine"]:
            xhat = (x - _per_channel(self.mean.data, nd)) * _per_channel(inv_std, nd)
            self.gamma.diff[...] = np.sum(dy * xhat, axis=axes)
            self.beta.diff[...] = np.sum(dy, axis=axes)
            dy = dy * _per_channel(self.gamma.data, nd)
        if dx is not None:
            np.multiply(dy, _per_channel(inv_std, nd), out=dx)

    def to_onnx(self, g):
        """BatchNormalization in inference mode (scale 1 and bias 0 when not affine)."""
        name, params = self.name, g.params
        if self.p["use_global_stats"] is False:
            raise ValueError(f"layer {name!r}: BatchNorm with use_global_stats false cannot be exported")
        c = params["mean"].shape[0]
        scale = params.get("weight", np.ones(c, np.float32))
        bias = params.get("bias", np.zeros(c, np.float32))
        args = [g.inputs[0], g.const(f"{name}.weight", scale), g.const(f"{name}.bias", bias),
                g.const(f"{name}.mean", params["mean"]), g.const(f"{name}.var", params["var"])]
        g.node("BatchNormalization", args, g.outputs, name, epsilon=float(self.p["eps"]),
               momentum=float(self.p["momentum"]))


@register
class Scale(_ChannelAffine):
    type_name = "Scale"
    group = "norm"
    unit_params = ("weight",)
    gradcheck_case = ({"bias_term": True, "filler": {"type": "gaussian", "std": 1.0}}, [(2, 3, 2, 2)])

    def ops(self, bottom_shapes, top_shapes):
        return per_image(top_shapes[0])
    PARAMS = {"bias_term": False, "filler": {"type": "constant", "value": 1.0},
              "bias_filler": {"type": "constant", "value": 0.0}}
    inplace_ok = False

    @classmethod
    def affine_at_inference(cls, p):
        return True

    @classmethod
    def inference_affine(cls, p, get):
        g = get("weight")
        return g, (get("bias") if p["bias_term"] else np.zeros_like(g))

    @classmethod
    def permuted(cls, p, params, perm, shapes):
        """Along axis 1 of the permuted tensor, axis perm[1] of x: the same layer when that is
        axis 1 again, or when the weight and bias are each one value (a broadcast constant, as
        ONNX's Mul / Add by a scalar import), refilled to x's channel count."""
        if perm[1] == 1:
            return p, params
        if not all(v.size and np.all(v == v.reshape(-1)[0]) for v in params.values()):
            return None
        c = shapes[0][1]
        return p, {k: np.full((c,), v.reshape(-1)[0], v.dtype) for k, v in params.items()}

    @classmethod
    def to_caffe(cls, p, w):
        w.add("Scale", ["weight", "bias"] if p["bias_term"] else ["weight"], multipliers=True,
              scale_param={"bias_term": bool(p["bias_term"])})

    def setup(self, bottom_shapes, fill_rng):
        c = bottom_shapes[0][1]
        self.gamma = self.add_param("weight", (c,), 0)
        fillers.fill(self.gamma.data, self.p["filler"], fill_rng)
        self.beta = None
        if self.p["bias_term"]:
            self.beta = self.add_param("bias", (c,), 1)
            fillers.fill(self.beta.data, self.p["bias_filler"], fill_rng)

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2 or bottom_shapes[0][1] != self.gamma.shape[0]:
            raise self.shape_error("channel count", self.gamma.shape[0], bottom_shapes[0])
        return [bottom_shapes[0]]

    def forward(self, bottom, top):
        x = bottom[0].data
        shift = None if self.beta is None else np.asarray(self.beta.data, x.dtype)
        self._write(x, np.asarray(self.gamma.data, x.dtype), shift, top)

    def backward(self, top, propagate_down, bottom):
        dy, x = top[0].diff, bottom[0].data
        axes = _reduce_axes(x.ndim)
        self.gamma.diff[...] = np.sum(dy * x, axis=axes)
        if self.beta is not None:
            self.beta.diff[...] = np.sum(dy, axis=axes)
        if propagate_down[0]:
            np.multiply(dy, _per_channel(self.gamma.data, x.ndim), out=bottom[0].diff)

    def to_onnx(self, g):
        """Mul by the weight as a (C, 1, ...) constant, then Add of the bias likewise."""
        name = self.name
        shape = (-1,) + (1,) * (len(g.input_shapes[0]) - 2)
        w = g.const(f"{name}.weight", g.params["weight"].reshape(shape))
        if "bias" in g.params:
            mid = f"{name}:scaled"
            g.node("Mul", [g.inputs[0], w], [mid], f"{name}_mul")
            g.node("Add", [mid, g.const(f"{name}.bias", g.params["bias"].reshape(shape))], g.outputs, name)
        else:
            g.node("Mul", [g.inputs[0], w], g.outputs, name)


# ---- ONNX -> decaf (Add/Mul by a per-channel constant become a Scale: see eltwise.py) ----------
@onnx_importer("BatchNormalization")
def _batchnorm_from_onnx(imp, node):
    """Inference mode only: the running mean and var are the statistics, scale and B the affine part."""
    a = imp.attrs(node)
    imp.only_first_output(node)
    if a.get("training_mode", 0):
        raise imp.fail(f"node {imp.label(node)}: BatchNormalization in training mode is not supported")
    if imp.opset < 9 and a.get("spatial", 1) == 0:
        raise imp.fail(f"node {imp.label(node)}: BatchNormalization with spatial=0 is not supported")
    params = {"weight": imp.need_const(node, 1, "scale").reshape(-1),
              "bias": imp.need_const(node, 2, "B").reshape(-1),
              "mean": imp.need_const(node, 3, "mean").reshape(-1),
              "var": imp.need_const(node, 4, "var").reshape(-1)}
    imp.add(node, "BatchNorm", [node.input[0]], node.output[0], params, eps=float(a.get("epsilon", 1e-5)),
            momentum=float(a.get("momentum", 0.9)), affine=True)


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("BatchNorm")
def _batchnorm_from_caffe(ctx, layer):
    p = layer.param("batch_norm_param")
    d = {"type": "BatchNorm", "eps": p.get("eps", 1e-5), "momentum": p.get("moving_average_fraction", 0.999)}
    if "use_global_stats" in p:
        d["use_global_stats"] = p["use_global_stats"]
    ctx.weights(["mean", "var", None], convert=_unscale_statistics)
    return d


def _unscale_statistics(arrays, fail):
    """Caffe's blobs are (sum of means, sum of variances, scale factor): decaf keeps mean and var
    divided by the factor (a factor 0 gives 0, as in Caffe)."""
    mean, var, factor = arrays
    if factor.size != 1:
        raise fail(f"the BatchNorm scale factor blob has {factor.size} values, expected 1")
    scale = 0.0 if factor[0] == 0 else 1.0 / float(factor[0])
    return [mean * np.float32(scale), var * np.float32(scale), None]


@caffe_importer("Scale")
def _scale_from_caffe(ctx, layer):
    """One bottom (a learned scale), along axis 1 only."""
    p = layer.param("scale_param")
    if len(layer.bottom) != 1:
        raise ctx.fail("Scale with a second bottom (the scale as an input) is not supported")
    ctx.axis_one(p.get("axis"))
    if p.get("num_axes", 1) != 1:
        raise ctx.fail(f"num_axes {p['num_axes']} is not supported (1)")
    bias = bool(p.get("bias_term", False))
    ctx.weights(["weight", "bias"] if bias else ["weight"])
    return {"type": "Scale", "bias_term": bias, **ctx.multipliers()}
