"""Plain NumPy versions of decaf's kernels: the math, written to be read.

Each function has the signature of its compiled twin in ``decaf.kernels._compiled`` and, like it,
writes into output arrays the caller allocated (nothing is returned). Arrays are NCHW and
C-contiguous; float32 or float64 (float64 is for gradient checks), all of one dtype.

The convolution-like kernels share one idea. Place the image in a zero canvas that holds the
padding, then for every kernel offset (i, j) the pixels that offset sees for all outputs at once
are one strided slice of the canvas:

    canvas[..., i*dh : i*dh + sh*(Ho-1) + 1 : sh, j*dw : j*dw + sw*(Wo-1) + 1 : sw]   # (B, C, Ho, Wo)

So every kernel loops over the kh*kw offsets and is vectorised over batch, channels and pixels.
Geometry: output (oh, ow) reads input (oh*sh - pad_top + i*dh, ow*sw - pad_left + j*dw); pixels
outside the image read as 0 (max pooling ignores them instead). pads = (top, left, bottom, right).
"""
import numpy as np

__all__ = [
    "im2col", "col2im",
    "max_pool_forward", "max_pool_values", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
    "lrn_forward", "lrn_backward",
    "depthwise_conv_forward", "depthwise_conv_backward",
    "conv_work_size", "conv_forward", "conv_backward", "copy_count_nonfinite", "sgd_step", "channel_affine",
    "gelu", "layernorm",
    "batchnorm_scale_shift", "batchnorm_train_forward", "batchnorm_train_backward",
]


# ---- helpers ---------------------------------------------------------------------------------

def _check(func, shapes, **arrays):
    """Outputs are written in place, so every array must be a C-contiguous ndarray: the float ones
    all float32 or all float64, argmax int32; and of shapes[name] where given."""
    dtype = None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
            raise ValueError(f"{func}: {name} must be a C-contiguous numpy array")
        if name == "argmax":
            expected = np.dtype(np.int32)
        else:
            dtype = a.dtype if dtype is None else dtype
            expected = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
        if a.dtype != expected:
            raise ValueError(f"{func}: {name} has dtype {a.dtype}, expected {expected}")
        if name in shapes and a.shape != tuple(shapes[name]):
            raise ValueError(f"{func}: {name} has shape {a.shape}, expected {tuple(shapes[name])}")


def _first_image(func, name, a):
    """a[:1] (one image, contiguous) when a's images are in order and apart (a run of channels of a
    wider tensor, as the compiled kernels take it), else a itself (for _check to refuse)."""
    if isinstance(a, np.ndarray) and a.ndim == 4 and a.shape[0] > 1 and a[:1].flags.c_contiguous:
        if a.strides[0] < a[0].nbytes:
            raise ValueError(f"{func}: the images of {name} overlap or are out of order")
        return a[:1]
    return a


def _ints(value, name, count, minimum):
    items = tuple(int(v) for v in value)
    if len(items) != count or any(v < minimum for v in items):
        raise ValueError(f"{name} must be {count} ints >= {minimum}, got {value!r}")
    return items


def _canvas(x, pad_top, pad_left, height, width, fill=0):
    """x (B, C, H, W) placed at (pad_top, pad_left) in a (B, C, height, width) canvas of `fill`.
    The canvas is at least large enough for x; past x it is padding."""
    B, C, H, W = x.shape
    canvas = np.full((B, C, max(height, pad_top + H), max(width, pad_left + W)), fill, dtype=x.dtype)
    canvas[:, :, pad_top:pad_top + H, pad_left:pad_left + W] = x
    return canvas


def _extent(n_out, k, stride, dilation):
    """Canvas size that holds every window: the last output's last tap is at
    (n_out-1)*stride + (k-1)*dilation."""
    return (n_out - 1) * stride + (k - 1) * dilation + 1 if n_out > 0 else 0


def _taps(i, j, Ho, Wo, stride, dilation):
    """The canvas slices kernel offset (i, j) reads for all (Ho, Wo) outputs."""
    def along(offset, n_out, s, d):
        start = offset * d
        return slice(start, start + s * (n_out - 1) + 1 if n_out > 0 else start, s)
    return along(i, Ho, stride[0], dilation[0]), along(j, Wo, stride[1], dilation[1])


def _conv_canvas(x, kernel, stride, pads, dilation, Ho, Wo, fill=0):
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return _canvas(x, pads[0], pads[1], _extent(Ho, kh, sh, dh), _extent(Wo, kw, sw, dw), fill)


def _crop(canvas, pads, H, W):
    return canvas[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + W]


# ---- im2col / col2im -------------------------------------------------------------------------

def im2col(x, cols, kernel, stride, pads, dilation, out_hw):
    """cols[(c*kh + i)*kw + j, b*Ho*Wo + oh*Wo + ow] = x[b, c, oh*sh - pad_top + i*dh,
    ow*sw - pad_left + j*dw], 0 outside the image. x (B, C, H, W), cols (C*kh*kw, B*Ho*Wo)."""
    kh, kw = _ints(kernel, "kernel", 2, 1)
    stride, pads, dilation = (_ints(stride, "stride", 2, 1), _ints(pads, "pads", 4, 0),
                              _ints(dilation, "dilation", 2, 1))
    Ho, Wo = _ints(out_hw, "out_hw", 2, 0)
    B, C, H, W = x.shape
    _check("im2col", {"cols": (C * kh * kw, B * Ho * Wo)}, x=x, cols=cols)
    if cols.size == 0:
        return
    canvas = _conv_canvas(x, (kh, kw), stride, pads, dilation, Ho, Wo)
    # View cols as (C, kh, kw, B, Ho, Wo): row (c, i, j), column (b, oh, ow).
    cols6 = cols.reshape(C, kh, kw, B, Ho, Wo)
    for i in range(kh):
        for j in range(kw):
            patch = canvas[(Ellipsis,) + _taps(i, j, Ho, Wo, stride, dilation)]  # (B, C, Ho, Wo)
            cols6[:, i, j] = patch.transpose(1, 0, 2, 3)


def col2im(cols, x, kernel, stride, pads, dilation, out_hw):
    """The adjoint of im2col: x is zeroed, then every cols entry is added into the pixel im2col
    copied it from; entries that came from the padding are dropped."""
    kh, kw = _ints(kernel, "kernel", 2, 1)
    stride, pads, dilation = (_ints(stride, "stride", 2, 1), _ints(pads, "pads", 4, 0),
                              _ints(dilation, "dilation", 2, 1))
    Ho, Wo = _ints(out_hw, "out_hw", 2, 0)
    B, C, H, W = x.shape
    _check("col2im", {"cols": (C * kh * kw, B * Ho * Wo)}, x=x, cols=cols)
    canvas = _conv_canvas(np.zeros_like(x), (kh, kw), stride, pads, dilation, Ho, Wo)
    cols6 = cols.reshape(C, kh, kw, B, Ho, Wo)
    for i in range(kh):
        for j in range(kw):
            # Within one offset the outputs read distinct pixels, so += on the slice is safe.
            canvas[(Ellipsis,) + _taps(i, j, Ho, Wo, stride, dilation)] += cols6[:, i, j].transpose(1, 0, 2, 3)
    x[...] = _crop(canvas, pads, H, W)


# ---- pooling ---------------------------------------------------------------------------------

def max_pool_forward(x, y, argmax, kernel, stride, pads):
    """y = max over each window's real pixels (padding never wins); argmax (int32) = h*W + w of
    that pixel, the first in row-major order on ties. A window with no real pixel gives -inf, -1."""
    kernel, stride = _ints(kernel, "kernel", 2, 1), _ints(stride, "stride", 2, 1)
    pads = _ints(pads, "pads", 4, 0)
    B, C, H, W = x.shape
    Ho, Wo = y.shape[2:]
    _check("max_pool_forward", {"y": (B, C, Ho, Wo), "argmax": (B, C, Ho, Wo)},
           x=x, y=y, argmax=argmax)
    canvas = _conv_canvas(x, kernel, stride, pads, (1, 1), Ho, Wo)
    # Where each canvas cell comes from: its flat index h*W + w in the image, -1 in the padding.
    source = _conv_canvas(np.arange(H * W).reshape(1, 1, H, W), kernel, stride, pads, (1, 1), Ho, Wo,
                          fill=-1)[0, 0]
    best = np.full((B, C, Ho, Wo), -np.inf, dtype=x.dtype)
    best_index = np.full((B, C, Ho, Wo), -1, dtype=np.int32)
    seen = np.zeros((Ho, Wo), dtype=bool)  # has the window met a real pixel yet?
    # Offsets in row-major order + strict ">" = the first maximum wins, as in the C loop.
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _taps(i, j, Ho, Wo, stride, (1, 1))
            value, index = canvas[:, :, rows, cols], source[rows, cols]
            real = index >= 0
            take = real & (~seen | (value > best))
            best = np.where(take, value, best)
            best_index = np.where(take, index, best_index)
            seen |= real
    y[...] = best
    argmax[...] = best_index


def max_pool_values(x, y, kernel, stride, pads):
    """y = max over each window's real pixels, without argmax; a NaN in a window gives NaN, a
    window with no real pixel -inf."""
    kernel, stride = _ints(kernel, "kernel", 2, 1), _ints(stride, "stride", 2, 1)
    pads = _ints(pads, "pads", 4, 0)
    B, C, H, W = x.shape
    Ho, Wo = y.shape[2:]
    _check("max_pool_values", {"y": (B, C, Ho, Wo)}, x=x, y=y)
    canvas = _conv_canvas(x, kernel, stride, pads, (1, 1), Ho, Wo, fill=-np.inf)   # padding never wins
    best = np.full((B, C, Ho, Wo), -np.inf, dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _taps(i, j, Ho, Wo, stride, (1, 1))
            best = np.maximum(best, canvas[:, :, rows, cols])      # np.maximum propagates NaN
    y[...] = best


def max_pool_backward(dy, argmax, dx):
    """dx is zeroed, then dx[b, c].flat[argmax[b, c, oh, ow]] += dy[b, c, oh, ow]
    (argmax -1, a window without real pixels, sends nothing)."""
    B, C = dy.shape[:2]
    _check("max_pool_backward", {"argmax": dy.shape, "dx": (B, C) + dx.shape[2:]},
           dy=dy, dx=dx, argmax=argmax)
    dx[...] = 0
    planes = dx.reshape(B * C, -1)  # a view: dx is contiguous
    plane = np.broadcast_to(np.arange(B * C).reshape(B, C, 1, 1), argmax.shape)
    keep = argmax >= 0
    np.add.at(planes, (plane[keep], argmax[keep]), dy[keep])


def _avg_divisor(Ho, Wo, kernel, stride, pads, H, W, count_include_pad, dtype):
    """The (Ho, Wo) divisors of average pooling, 0 for windows with nothing to count."""
    def along(n_out, k, s, pad, pad_end, size):
        start = np.arange(n_out) * s - pad
        if count_include_pad:  # the window clipped to the padded image, as Caffe and PyTorch
            count = np.minimum(start + k, size + pad_end) - start
        else:  # the real pixels only
            count = np.minimum(start + k, size) - np.maximum(start, 0)
        return np.maximum(count, 0)
    rows = along(Ho, kernel[0], stride[0], pads[0], pads[2], H)
    cols = along(Wo, kernel[1], stride[1], pads[1], pads[3], W)
    return np.outer(rows, cols).astype(dtype)


def avg_pool_forward(x, y, kernel, stride, pads, count_include_pad):
    """y = (sum of the window's real pixels) / divisor; the divisor is the window clipped to the
    padded image if count_include_pad, else the number of real pixels; an empty divisor gives 0."""
    kernel, stride = _ints(kernel, "kernel", 2, 1), _ints(stride, "stride", 2, 1)
    pads = _ints(pads, "pads", 4, 0)
    B, C, H, W = x.shape
    Ho, Wo = y.shape[2:]
    _check("avg_pool_forward", {"y": (B, C, Ho, Wo)}, x=x, y=y)
    canvas = _conv_canvas(x, kernel, stride, pads, (1, 1), Ho, Wo)
    total = np.zeros((B, C, Ho, Wo), dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            total += canvas[(Ellipsis,) + _taps(i, j, Ho, Wo, stride, (1, 1))]
    divisor = _avg_divisor(Ho, Wo, kernel, stride, pads, H, W, count_include_pad, x.dtype)
    y[...] = np.divide(total, divisor, out=np.zeros_like(total), where=divisor > 0)


def avg_pool_backward(dy, dx, kernel, stride, pads, count_include_pad):
    """The adjoint of avg_pool_forward: dx is zeroed, then each dy / divisor is added to every
    real pixel of its window."""
    kernel, stride = _ints(kernel, "kernel", 2, 1), _ints(stride, "stride", 2, 1)
    pads = _ints(pads, "pads", 4, 0)
    B, C, Ho, Wo = dy.shape
    H, W = dx.shape[2:]
    _check("avg_pool_backward", {"dx": (B, C, H, W)}, dy=dy, dx=dx)
    divisor = _avg_divisor(Ho, Wo, kernel, stride, pads, H, W, count_include_pad, dy.dtype)
    share = np.divide(dy, divisor, out=np.zeros_like(dy), where=divisor > 0)
    canvas = _conv_canvas(np.zeros_like(dx), kernel, stride, pads, (1, 1), Ho, Wo)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            canvas[(Ellipsis,) + _taps(i, j, Ho, Wo, stride, (1, 1))] += share
    dx[...] = _crop(canvas, pads, H, W)  # what landed in the padding is dropped


# ---- local response normalisation ------------------------------------------------------------

def _channel_window_sum(v, before, after):
    """out[:, c] = sum of v[:, c'] for c' in [c - before, c + after] clipped to [0, C)."""
    C = v.shape[1]
    padded = np.pad(v, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(padded[:, d:d + C] for d in range(before + after + 1))


def lrn_forward(x, y, scale, local_size, alpha, beta, k):
    """Across channels (Caffe / ONNX): with n = local_size and the window of c being
    [c - (n-1)//2, c + n//2] clipped to [0, C),
        scale = k + (alpha / n) * (window sum of x^2),    y = x * scale^-beta.
    scale is kept for the backward pass."""
    n = _ints((local_size,), "local_size", 1, 1)[0]
    _check("lrn_forward", {"y": x.shape, "scale": x.shape}, x=x, y=y, scale=scale)
    scale[...] = k + (alpha / n) * _channel_window_sum(x * x, (n - 1) // 2, n // 2)
    y[...] = x * scale ** -beta


def lrn_backward(x, y, scale, dy, dx, local_size, alpha, beta):
    """dx = dy * scale^-beta - (2 alpha beta / n) * x * sum_{c' whose window holds c} dy y / scale.

    x[c] enters scale[c'] for every c' whose window holds c, i.e. c' in [c - n//2, c + (n-1)//2]:
    the forward window mirrored, so the sum is a window sum with before/after swapped."""
    n = _ints((local_size,), "local_size", 1, 1)[0]
    _check("lrn_backward", dict.fromkeys(("y", "scale", "dy", "dx"), x.shape),
           x=x, y=y, scale=scale, dy=dy, dx=dx)
    received = _channel_window_sum(dy * y / scale, n // 2, (n - 1) // 2)
    dx[...] = dy * scale ** -beta - (2 * alpha * beta / n) * x * received


# ---- the epilogue of the convolutions ----------------------------------------------------------

ACTIVATIONS = ("none", "clamp", "leaky", "hardswish", "silu", "sigmoid", "hardsigmoid", "gelu")


def activation(v, act):
    """act = (kind, lo, hi, alpha) applied to v (csrc/activation.h's table), a new array."""
    kind, lo, hi, alpha = act
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}; choose one of {sorted(ACTIVATIONS)}")
    one = np.asarray(1, v.dtype)
    if kind == "clamp":
        return np.minimum(np.maximum(v, np.asarray(lo, v.dtype)), np.asarray(hi, v.dtype))
    if kind == "leaky":
        return v * np.where(v < 0, np.asarray(alpha, v.dtype), one)
    if kind == "hardsigmoid":
        return np.minimum(np.maximum(v * np.asarray(alpha, v.dtype) + np.asarray(lo, v.dtype), 0),
                          np.asarray(hi, v.dtype))
    if kind == "hardswish":
        return np.clip(v + 3, 0, 6).astype(v.dtype) * v / np.asarray(6, v.dtype)
    if kind in ("silu", "sigmoid"):
        z = v * np.asarray(alpha, v.dtype) if kind == "silu" else v
        s = (np.tanh(z * np.asarray(0.5, v.dtype)) + one) * np.asarray(0.5, v.dtype)
        return v * s if kind == "silu" else s
    if kind == "gelu":
        out = np.empty(v.size, v.dtype)
        gelu(np.ascontiguousarray(v).reshape(-1), out)
        return out.reshape(v.shape)
    return v.copy()


def _finish(func, out, y, act, relu, relu_max, relu_out, residual):
    """Write the epilogue's results: y = out (+ residual), the activation in y or relu_out."""
    if relu:
        if act is not None:
            raise ValueError(f"{func}: relu and act both given")
        act = ("clamp", 0.0, relu_max, 0.0)
    if relu_out is not None and act is None:
        raise ValueError(f"{func}: relu_out without relu (or act)")
    if residual is not None:
        if residual is y:
            raise ValueError(f"{func}: the residual must not be y itself")
        out = out + residual
    if act is None:
        y[...] = out
    elif relu_out is not None and relu_out is not y:
        y[...] = out
        relu_out[...] = activation(np.asarray(out, y.dtype), act)
    else:
        y[...] = activation(np.asarray(out, y.dtype), act)


# ---- depthwise convolution -------------------------------------------------------------------

def depthwise_conv_forward(x, w, y, stride, pads, dilation, bias=None, relu=0.0, act=None, residual=None,
                           relu_out=None, means=None):
    """y[b, c] = x[b, c] cross-correlated with w[c, 0] (w is (C, 1, kh, kw)), + bias[c] if given,
    + residual; then min(max(., 0), relu) if relu > 0 (a fused ReLU or ReLU6), or the activation
    act, in y or into relu_out (as conv_forward); means (B, C, 1, 1), if given: each plane's mean
    of that result (relu_out's when given)."""
    stride, pads = _ints(stride, "stride", 2, 1), _ints(pads, "pads", 4, 0)
    dilation = _ints(dilation, "dilation", 2, 1)
    B, C, H, W = x.shape
    kh, kw = w.shape[2:]
    Ho, Wo = y.shape[2:]
    _check("depthwise_conv_forward", {"w": (C, 1, kh, kw), "y": (B, C, Ho, Wo)}, x=x, w=w, y=y)
    canvas = _conv_canvas(x, (kh, kw), stride, pads, dilation, Ho, Wo)
    out = np.zeros((B, C, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            out += w[:, 0, i, j, None, None] * canvas[(Ellipsis,) + _taps(i, j, Ho, Wo, stride, dilation)]
    if bias is not None:
        out += bias.reshape(1, C, 1, 1)
    if means is not None:
        _check("depthwise_conv_forward", {"means": (B, C, 1, 1)}, x=x, means=means)
    _finish("depthwise_conv_forward", out, y, act, relu > 0, relu, relu_out, residual)
    if means is not None:
        final = relu_out if relu_out is not None and (act is not None or relu > 0) else y
        means[...] = final.mean(axis=(2, 3), keepdims=True)


def depthwise_conv_backward(x, w, dy, dx, dw, stride, pads, dilation):
    """dx (zeroed, then filled) and dw (overwritten, summed over the batch); either may be None."""
    stride, pads = _ints(stride, "stride", 2, 1), _ints(pads, "pads", 4, 0)
    dilation = _ints(dilation, "dilation", 2, 1)
    B, C, H, W = x.shape
    kh, kw = w.shape[2:]
    Ho, Wo = dy.shape[2:]
    outputs = {name: a for name, a in (("dx", dx), ("dw", dw)) if a is not None}
    _check("depthwise_conv_backward",
           {"w": (C, 1, kh, kw), "dy": (B, C, Ho, Wo), "dx": x.shape, "dw": (C, 1, kh, kw)},
           x=x, w=w, dy=dy, **outputs)
    canvas = _conv_canvas(x, (kh, kw), stride, pads, dilation, Ho, Wo)
    dcanvas = np.zeros_like(canvas)
    for i in range(kh):
        for j in range(kw):
            taps = (Ellipsis,) + _taps(i, j, Ho, Wo, stride, dilation)
            if dw is not None:  # y += w[c,0,i,j] * patch, so dw[c,0,i,j] = sum over b, oh, ow of dy * patch
                dw[:, 0, i, j] = np.einsum("bchw,bchw->c", dy, canvas[taps])
            if dx is not None:  # ... and the patch receives w[c,0,i,j] * dy
                dcanvas[taps] += w[:, 0, i, j, None, None] * dy
    if dx is not None:
        dx[...] = _crop(dcanvas, pads, H, W)


# ---- convolution as im2col + matrix products -------------------------------------------------

def conv_work_size(x_shape, w_shape, group, kernel, stride, pads, dilation, out_hw, backward, prepacked=False):
    """The reference allocates its own columns: it needs no scratch space."""
    return 0


def _conv_columns(x, w, group, kernel, stride, pads, dilation, out_hw):
    """cols of the whole batch as (group, C/group kh kw, B Ho Wo) and w as (group, K/group, C/group kh kw)."""
    B, C = x.shape[:2]
    K = w.shape[0]
    cols = np.empty((C * kernel[0] * kernel[1], B * out_hw[0] * out_hw[1]), x.dtype)
    im2col(x, cols, kernel, stride, pads, dilation, out_hw)
    return cols.reshape(group, -1, cols.shape[1]), w.reshape(group, K // group, -1)


def conv_packing(x_shape, w_shape, group, kernel, stride, pads, dilation, out_hw):
    """The reference reads w as it is: nothing to pack."""
    return 0, 0


def conv_pack(x_shape, w, packed, group, kernel, stride, pads, dilation, out_hw):
    raise ValueError("conv_pack: the numpy reference reads its weights unpacked")


def conv_forward(x, w, bias, y, work, kernel, stride, pads, dilation, group, relu=False, relu_out=None,
                 relu_max=np.inf, act=None, residual=None, packed=None):
    """y[b] = w_g @ im2col(x[b])_g + bias per group g, + residual; with relu, min(max(., 0),
    relu_max), or the activation act = (kind, lo, hi, alpha), in y or into relu_out."""
    B, K, Ho, Wo = y.shape
    cols, wg = _conv_columns(x, w, group, kernel, stride, pads, dilation, (Ho, Wo))
    out = (wg @ cols).reshape(K, B, Ho, Wo).transpose(1, 0, 2, 3)     # (g, K/g, B HoWo) -> (B, K, Ho, Wo)
    if bias is not None:
        out = out + bias.reshape(1, K, 1, 1)
    _finish("conv_forward", out, y, act, relu, relu_max, relu_out, residual)


def conv_backward(x, w, dy, dx, dw, db, work, kernel, stride, pads, dilation, group, weights_only=False):
    """dw_g = dy_g @ cols_g^T, db = sums of dy, dx = col2im(w_g^T @ dy_g); summed over the batch.
    (weights_only: dx must be None; the reference has no other kernels to pick.)"""
    if weights_only and dx is not None:
        raise ValueError("conv_backward: weights_only computes dw and db only: dx must be None")
    B, K, Ho, Wo = dy.shape
    cols, wg = _conv_columns(x, w, group, kernel, stride, pads, dilation, (Ho, Wo))
    dyg = dy.transpose(1, 0, 2, 3).reshape(group, K // group, -1)           # (g, K/g, B HoWo)
    dw[...] = (dyg @ cols.transpose(0, 2, 1)).reshape(dw.shape)
    if db is not None:
        db[...] = dy.sum(axis=(0, 2, 3))
    if dx is not None:
        dcols = (wg.transpose(0, 2, 1) @ dyg).reshape(-1, B * Ho * Wo)
        col2im(np.ascontiguousarray(dcols), dx, kernel, stride, pads, dilation, (Ho, Wo))


def sgd_step(w, v, g, lr, mu, decay, scale, nesterov):
    """One SGD step with momentum (see kernels.sgd_step), in NumPy."""
    step = scale * g + decay * w
    old = v.copy() if nesterov else None
    v *= mu
    v += lr * step
    w -= (1 + mu) * v - mu * old if nesterov else v


def transpose(x, y):
    """y[b] = x[b].T for x (B, M, N) and y (B, N, M)."""
    _check("transpose", {"y": (x.shape[0], x.shape[2], x.shape[1])}, x=x, y=y)
    y[...] = x.transpose(0, 2, 1)


def erf(x, y):
    """y = erf(x) over flat float arrays (y may be x): SciPy's."""
    from scipy.special import erf as scipy_erf       # (imported when a net first needs it)
    _check("erf", {"y": x.shape}, x=x, y=y)
    if x.ndim != 1:
        raise ValueError(f"erf: x must be flat, got shape {x.shape}")
    y[...] = scipy_erf(x)


def gelu(x, y):
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 (SciPy's ndtr, accurate in the lower tail),
    over flat float arrays (y may be x); -0 where Phi is 0 (so GELU(-inf) is -0, not NaN)."""
    from scipy.special import ndtr
    _check("gelu", {"y": x.shape}, x=x, y=y)
    if x.ndim != 1:
        raise ValueError(f"gelu: x must be flat, got shape {x.shape}")
    phi = ndtr(x)
    with np.errstate(invalid="ignore"):                  # (-inf times 0, replaced)
        y[...] = np.where(phi == 0, x.dtype.type(-0.0), x * phi)


def layernorm(x, gamma, beta, eps, y, mean, inv_std):
    """Over axis 1 of x (outer, C, inner): m = mean of x[o, :, i], v = mean of (x - m)^2 (biased),
    inv_std = 1 / sqrt(v + eps), y = (x - m) inv_std gamma[c] + beta[c]; m and inv_std (outer,
    inner) are kept for backward. y may be x."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError(f"layernorm: x must be a 3-D (outer, C, inner) array, got {getattr(x, 'shape', x)!r}")
    outer, C, inner = x.shape
    _check("layernorm", {"gamma": (C,), "beta": (C,), "y": x.shape, "mean": (outer, inner),
                         "inv_std": (outer, inner)}, x=x, gamma=gamma, beta=beta, y=y, mean=mean, inv_std=inv_std)
    if not eps >= 0:
        raise ValueError(f"layernorm: eps must be >= 0, got {eps}")
    if C == 0:
        raise ValueError("layernorm: x has no values to normalise over (C = 0)")
    m = x.mean(axis=1, keepdims=True)
    centred = x - m
    r = 1 / np.sqrt(np.mean(centred * centred, axis=1, keepdims=True) + np.asarray(eps, x.dtype))
    mean[...] = m[:, 0]
    inv_std[...] = r[:, 0]
    y[...] = centred * r * gamma[:, None] + beta[:, None]


def copy_count_nonfinite(src, dst):
    """dst[...] = src; returns the number of NaN or infinite values."""
    dst[...] = src
    return int(np.count_nonzero(~np.isfinite(src)))


# ---- per-channel affine (BatchNorm at inference, Scale) ----------------------------------------

def channel_affine(x, scale, shift, y, act=None, act_out=None):
    """y = x * scale[c] + shift[c] over (B, C, H, W) (y may be x; shift None: 0); then the activation
    act in y, or into act_out (y keeping the values before it)."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"channel_affine: x must be 4-D (B, C, H, W), got shape {np.shape(x)}")
    outputs = {"act_out": act_out} if act_out is not None else {}
    C = x.shape[1]
    if shift is None:
        shift = np.zeros(C, x.dtype)
    # x may be a run of channels of a wider tensor (x[:, c0:c1]): each image contiguous, the
    # images apart; checked as its first image
    _check("channel_affine", {"y": x.shape, "scale": (C,), "shift": (C,), "act_out": x.shape},
           x=_first_image("channel_affine", "x", x), scale=scale, shift=shift, y=y, **outputs)
    if act_out is not None and act is None:
        raise ValueError("channel_affine: act_out without act")
    out = x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
    y[...] = out
    if act is not None:
        (y if act_out is None else act_out)[...] = activation(out, act)


def batchnorm_scale_shift(mean, var, weight, bias, eps, scale, shift):
    """scale = weight / sqrt(var + eps), shift = bias - scale mean (weight None: 1, bias None: 0):
    BatchNorm at inference as channel_affine's scale and shift."""
    C = mean.shape[0] if mean.ndim == 1 else -1
    given = {k: a for k, a in (("weight", weight), ("bias", bias)) if a is not None}
    _check("batchnorm_scale_shift", {k: (C,) for k in ("var", "weight", "bias", "scale", "shift")},
           mean=mean, var=var, scale=scale, shift=shift, **given)
    s = (1 if weight is None else weight) / np.sqrt(var + np.asarray(eps, var.dtype))
    scale[...] = s
    shift[...] = (0 if bias is None else bias) - s * mean


# ---- BatchNorm with batch statistics (the train phase) -----------------------------------------

def _batchnorm_checks(func, x, gamma, **arrays):
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{func}: x must be 4-D (B, C, H, W), got shape {np.shape(x)}")
    C = x.shape[1]
    given = {k: a for k, a in arrays.items() if a is not None}
    if gamma is not None:
        given["gamma"] = gamma
    shapes = {k: (C,) for k in ("gamma", "beta", "mean", "var", "dgamma", "dbeta")}
    _check(func, dict(shapes, y=x.shape, dy=x.shape, dx=x.shape, act_out=x.shape), x=x, **given)
    return C, (0, 2, 3)


def _per_channel(v):
    return v.reshape(1, -1, 1, 1)


def batchnorm_train_forward(x, gamma, beta, y, mean, var, eps, act=None, act_out=None):
    """mean, var = the batch mean and biased variance of each channel of x (B, C, H, W); y = (x - mean)
    / sqrt(var + eps) * gamma + beta (gamma None: 1, beta None: 0); then the activation act in y, or
    into act_out (y keeping the values before it)."""
    func = "batchnorm_train_forward"
    _batchnorm_checks(func, x, gamma, beta=beta, y=y, mean=mean, var=var, act_out=act_out)
    if act_out is not None and act is None:
        raise ValueError(f"{func}: act_out without act")
    axes = (0, 2, 3)         # (the sums in float64, as the C kernel's)
    mean[...] = x.mean(axis=axes, dtype=np.float64)
    var[...] = x.var(axis=axes, dtype=np.float64)
    scale = 1 / np.sqrt(var + np.asarray(eps, x.dtype))
    if gamma is not None:
        scale = scale * gamma
    out = (x - _per_channel(mean)) * _per_channel(scale)
    if beta is not None:
        out = out + _per_channel(beta)
    y[...] = out
    if act is not None:
        (y if act_out is None else act_out)[...] = activation(out, act)


def batchnorm_train_backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, eps):
    """With xhat = (x - mean) / sqrt(var + eps), mean and var the batch statistics of x, and m the
    B H W values of a channel: dbeta = sum(dy), dgamma = sum(dy xhat) per channel, and
    dx = gamma / sqrt(var + eps) (dy - dbeta / m - xhat dgamma / m) (gamma None: 1). dx, dgamma,
    dbeta None: not computed."""
    func = "batchnorm_train_backward"
    C, axes = _batchnorm_checks(func, x, gamma, dy=dy, mean=mean, var=var, dx=dx, dgamma=dgamma, dbeta=dbeta)
    inv_std = 1 / np.sqrt(var + np.asarray(eps, x.dtype))
    xhat = (x - _per_channel(mean)) * _per_channel(inv_std)
    sum_dy, sum_dy_xhat = dy.sum(axis=axes, dtype=np.float64), (dy * xhat).sum(axis=axes, dtype=np.float64)
    if dbeta is not None:
        dbeta[...] = sum_dy
    if dgamma is not None:
        dgamma[...] = sum_dy_xhat
    if dx is not None:
        m = x.size // C if C else 1
        k = inv_std if gamma is None else gamma * inv_std
        mean_dy, mean_dy_xhat = (np.asarray(v / m, x.dtype) for v in (sum_dy, sum_dy_xhat))
        dx[...] = _per_channel(k) * (dy - _per_channel(mean_dy) - xhat * _per_channel(mean_dy_xhat))
