"""Loss layers. Each outputs a scalar blob of shape ().

SoftmaxWithLoss (multinomial logistic loss of the softmax), bottoms [scores (N, K, ...), label (N, ...)]:
    p = softmax(scores) over axis 1
    L = -1/M sum_n log p[n, label_n]     (M = number of labels not equal to ignore_label)
    dscores = (p - onehot(label)) / M,   scaled by the loss weight (the top's diff)

EuclideanLoss, bottoms [a, b] of equal shape:
    L = 1/(2N) sum (a - b)^2;  da = (a - b) / N;  db = -(a - b) / N
"""
import numpy as np

from ..interop import caffe_importer
from ..layer import Layer, per_image, register
from .softmax import softmax


@register
class SoftmaxWithLoss(Layer):
    type_name = "SoftmaxWithLoss"
    group = "neuron"
    roles = frozenset({"classifier_loss"})
    gradcheck_case = ({}, [(4, 5), (4,)])

    def ops(self, bottom_shapes, top_shapes):
        return 5 * per_image(bottom_shapes[0])
    PARAMS = {"ignore_label": None}
    n_bottom = 2
    is_loss = True

    @classmethod
    def to_caffe(cls, p, w):
        loss = {} if p["ignore_label"] is None else {"loss_param": {"ignore_label": int(p["ignore_label"])}}
        w.add("SoftmaxWithLoss", **loss)

    def reshape(self, bottom_shapes):
        scores, labels = bottom_shapes
        if len(scores) < 2:
            raise self.shape_error("scores need shape (N, classes, ...)", "(N, K, ...)", scores)
        want = (scores[0],) + tuple(scores[2:])
        if tuple(labels) != want and tuple(labels) != want + (1,) * (len(labels) - len(want)):
            raise self.shape_error(f"label blob {self.bottom_names[1]!r} does not match scores {scores}",
                                   want, tuple(labels))
        self.prob = np.zeros(scores, np.float32)
        return [()]

    def _labels(self, bottom):
        scores = bottom[0].data
        labels = bottom[1].data.reshape((scores.shape[0],) + scores.shape[2:])
        labels = labels.astype(np.int64)
        valid = np.ones(labels.shape, bool) if self.p["ignore_label"] is None else labels != self.p["ignore_label"]
        k = scores.shape[1]
        bad = valid & ((labels < 0) | (labels >= k))
        if bad.any():
            raise ValueError(f"layer {self.name!r}: label {labels[bad].flat[0]} out of range [0, {k})")
        return labels, valid

    def forward(self, bottom, top):
        scores = bottom[0].data
        if self.prob.dtype != scores.dtype:
            self.prob = self.prob.astype(scores.dtype)
        softmax(scores, self.prob)
        labels, valid = self._labels(bottom)
        picked = np.take_along_axis(self.prob, np.where(valid, labels, 0)[:, None], axis=1)[:, 0]
        count = max(int(valid.sum()), 1)
        top[0].data[...] = -np.sum(np.log(np.maximum(picked, np.finfo(scores.dtype).tiny))[valid]) / count

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        labels, valid = self._labels(bottom)
        grad = bottom[0].diff
        grad[...] = self.prob
        onehot = np.zeros_like(grad)
        np.put_along_axis(onehot, np.where(valid, labels, 0)[:, None], 1, axis=1)
        grad -= onehot
        grad *= np.expand_dims(valid, 1)
        grad *= float(top[0].diff) / max(int(valid.sum()), 1)


@register
class EuclideanLoss(Layer):
    type_name = "EuclideanLoss"

    def ops(self, bottom_shapes, top_shapes):
        return 3 * per_image(bottom_shapes[0])
    n_bottom = 2
    is_loss = True

    @classmethod
    def to_caffe(cls, p, w):
        w.add("EuclideanLoss")

    def reshape(self, bottom_shapes):
        a, b = bottom_shapes
        if tuple(a) != tuple(b):
            raise self.shape_error("both bottoms must have the same shape", a, b)
        return [()]

    def forward(self, bottom, top):
        self.delta = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.delta ** 2) / (2 * bottom[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        scale = float(top[0].diff) / bottom[0].shape[0]
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * scale * self.delta


# ---- Caffe -> decaf -----------------------------------------------------------------------------
@caffe_importer("SoftmaxWithLoss")
def _softmax_loss_from_caffe(ctx, layer):
    """Normalised by the count of valid labels (VALID, or FULL without an ignore_label) only."""
    ctx.axis_one(layer.param("softmax_param").get("axis"), "softmax axis")
    loss = layer.param("loss_param")
    if loss.get("normalization") == "NONE" or ("normalization" not in loss and loss.get("normalize") is False):
        raise ctx.fail("loss normalization other than VALID/FULL is not supported")
    d = {"type": "SoftmaxWithLoss"}
    if "ignore_label" in loss:
        d["ignore_label"] = loss["ignore_label"]
    return d


@caffe_importer("EuclideanLoss")
def _euclidean_from_caffe(ctx, layer):
    return {"type": "EuclideanLoss"}
