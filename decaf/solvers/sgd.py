"""Stochastic gradient descent with momentum (Caffe's form: the rate is inside the velocity).

With g the (clipped, decayed) gradient and lr the local rate (lr * lr_mult):

    plain     w <- w - lr * g                                   (momentum 0: no state)
    momentum  v <- mu * v + lr * g;   w <- w - v
    nesterov  v' <- mu * v + lr * g;  w <- w - ((1 + mu) * v' - mu * v);  v <- v'

The Nesterov line is the usual rewrite that evaluates the gradient at w, not at the
look-ahead point w - mu * v (Sutskever et al. 2013; Caffe's NesterovSolver).
"""
import numpy as np

from .. import kernels
from . import Solver


class SGD(Solver):
    name = "sgd"
    SLOTS = ("velocity",)
    HYPER = ("momentum", "nesterov")

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov SGD needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def slots(self):
        return self.SLOTS if self.momentum else ()     # plain SGD keeps no velocity

    def fused_update(self, param, lr, decay, scale, state):
        """With momentum and float32 C-contiguous arrays: the compiled one-pass kernels.sgd_step
        (the same formulas; float32 rounding may differ in the last bit from update's NumPy)."""
        w, g = param.data, param.diff
        v = state.get("velocity")
        if v is None or w.dtype != np.float32 or g.dtype != np.float32 or v.dtype != np.float32:
            return False
        if not (w.flags.c_contiguous and g.flags.c_contiguous and v.flags.c_contiguous):
            return False
        kernels.sgd_step(w.reshape(-1), v.reshape(-1), g.reshape(-1), lr, self.momentum, decay, scale,
                         self.nesterov)
        return True

    def update(self, param, grad, lr, state):
        w, mu = param.data, self.momentum
        if mu == 0:
            w -= lr * grad
            return
        v = state["velocity"]
        if self.nesterov:
            v_old = v.copy()
            v *= mu
            v += lr * grad
            w -= (1 + mu) * v - mu * v_old
        else:
            v *= mu
            v += lr * grad
            w -= v
