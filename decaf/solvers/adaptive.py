"""Adaptive per-element rates: Adagrad and Adam.

With g the (clipped, decayed) gradient, lr the local rate (lr * lr_mult), all operations
element-wise:

Adagrad (Duchi et al. 2011):
    h <- h + g^2
    w <- w - lr * g / (sqrt(h) + eps)

Adam (Kingma & Ba 2015), t = the number of this step counting from 1:
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    m_hat = m / (1 - beta1^t);  v_hat = v / (1 - beta2^t)
    w <- w - lr * m_hat / (sqrt(v_hat) + eps)

Weight decay is the L2 term added to g (as in Caffe), not AdamW's decoupled decay.
"""
import numpy as np

from . import Solver


class Adagrad(Solver):
    name = "adagrad"
    SLOTS = ("sum_sq",)
    HYPER = ("eps",)

    def __init__(self, params, lr=0.01, eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        self.eps = float(eps)

    def update(self, param, grad, lr, state):
        h = state["sum_sq"]
        h += grad * grad
        param.data -= lr * grad / (np.sqrt(h) + self.eps)


class Adam(Solver):
    name = "adam"
    SLOTS = ("m", "v")
    HYPER = ("beta1", "beta2", "eps")

    def __init__(self, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must be in [0, 1), got {b}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, param, grad, lr, state):
        b1, b2, t = self.beta1, self.beta2, self.iter + 1
        m, v = state["m"], state["v"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        param.data -= lr * m_hat / (np.sqrt(v_hat) + self.eps)
